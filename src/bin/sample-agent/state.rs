//! The data dir: `<ECS_DATADIR>/sample-agent.json` holds the cluster, the
//! container-instance ARN and every task, so they survive restarts and a
//! switch to another build that uses the same data dir.
//!
//! 1. on start, create the data dir if missing and read the file;
//! 2. if there is none, generate the instance ARN and write the file at once;
//! 3. if it belongs to another cluster, refuse to start (exit 5, terminal,
//!    like the real agent's cluster-mismatch check);
//! 4. after every change to the tasks, write it again, before answering.
//!
//! Only this module writes the file, and only through [`durable::write`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::durable;
use crate::error::{Error, Result};
use crate::ids;
use crate::tasks::TaskRecord;

pub const STATE_FILE: &str = "sample-agent.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub format: u32,
    pub cluster: String,
    pub container_instance_arn: String,
    #[serde(default)]
    pub tasks: Vec<TaskRecord>,
}

impl SavedState {
    /// The 32-hex id at the end of the container-instance ARN.
    pub fn instance_id(&self) -> &str {
        self.container_instance_arn
            .rsplit('/')
            .next()
            .unwrap_or_default()
    }
}

pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(data_dir: &Path) -> Store {
        Store {
            path: data_dir.join(STATE_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Steps 1 to 3 of the protocol above.
    pub fn load_or_init(&self, config: &Config) -> Result<SavedState> {
        durable::create_dir_all(&config.data_dir, "data dir")?;
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let state: SavedState =
                    serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
                        path: self.path.clone(),
                        message: e.to_string(),
                    })?;
                if state.format != FORMAT {
                    return Err(Error::CorruptState {
                        path: self.path.clone(),
                        message: format!("format {} is not {FORMAT}", state.format),
                    });
                }
                if state.cluster != config.cluster {
                    return Err(Error::ClusterMismatch {
                        path: self.path.clone(),
                        saved: state.cluster,
                        configured: config.cluster.clone(),
                    });
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = SavedState {
                    format: FORMAT,
                    cluster: config.cluster.clone(),
                    container_instance_arn: format!(
                        "arn:aws:ecs:{}:{}:container-instance/{}/{}",
                        config.region,
                        config.account,
                        config.cluster,
                        ids::random_hex(32)
                    ),
                    tasks: Vec::new(),
                };
                self.save(&state)?;
                Ok(state)
            }
            Err(e) => Err(Error::io("read state file", &self.path, e)),
        }
    }

    pub fn save(&self, state: &SavedState) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::CorruptState {
            path: self.path.clone(),
            message: format!("cannot encode: {e}"),
        })?;
        bytes.push(b'\n');
        durable::write(&self.path, "state file", 0o644, &bytes)
    }
}
