//! ecs-warden: supervises the Amazon ECS container agent and moves it from
//! one build to the next, crash-safely. See ARCHITECTURE.md for the map.

// `unsafe` is allowed in one module only: `sys` (`adopt_fd`,
// `sync_file_range`).
#![deny(unsafe_code)]

pub mod agent_env;
pub mod agent_image;
pub mod api;
pub mod backoff;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod document;
pub mod durable;
pub mod engine;
pub mod error;
pub mod event;
pub mod exit;
pub mod failpoint;
pub mod host;
pub mod host_facts;
pub mod hostnet;
pub mod http;
pub mod image;
pub mod introspection;
pub mod lock;
pub mod logfile;
pub mod netfilter;
pub mod notify;
pub mod paths;
pub mod reexec;
pub mod runtime;
pub mod source;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod sys;
pub mod update;
pub mod version;
