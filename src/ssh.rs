//! SSH connections through the system OpenSSH client.

use crate::connection::{Become, ConnectOptions, Connection, ConnectionError, ScriptOutput};
use crate::inventory::ConnectionSpec;

pub struct SshConnection {
    invocations: u32,
}

impl SshConnection {
    pub fn connect(
        name: &str,
        _spec: &ConnectionSpec,
        _become: &Become,
        _opts: &ConnectOptions,
    ) -> Result<Self, ConnectionError> {
        Err(ConnectionError::Unreachable(format!(
            "{name}: ssh transport not built yet"
        )))
    }
}

impl Connection for SshConnection {
    fn run_script(
        &mut self,
        _script: &str,
        _become: bool,
    ) -> Result<ScriptOutput, ConnectionError> {
        self.invocations += 1;
        Err(ConnectionError::Unreachable(
            "ssh transport not built yet".into(),
        ))
    }
    fn invocations(&self) -> u32 {
        self.invocations
    }
}
