//! How the agent is run. `docker_config` builds the `ecs-agent`
//! container's create body as ecs-init does.

pub mod docker_config;
