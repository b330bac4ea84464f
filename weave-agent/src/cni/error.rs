//! CNI's error result: a code from the spec's table, a short message and
//! details, printed on stdout with a non-zero exit.

use serde::Serialize;

/// The spec's well-known codes (0-99 reserved; 100+ are the plugin's own).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS only: ADD cannot be served.
    pub const NOT_AVAILABLE: u32 = 50;
    /// The agent refused the request (its reason is in `details`).
    pub const AGENT_REFUSED: u32 = 100;
    /// The agent's reply made no sense to this plugin (a version mismatch).
    pub const AGENT_GARBLED: u32 = 101;
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    pub code: u32,
    pub msg: &'static str,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: &'static str, details: impl Into<String>) -> Self {
        Self {
            code,
            msg,
            details: details.into(),
        }
    }

    /// The error result, in the version the caller spoke.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            details: &'a str,
        }
        serde_json::to_string(&Out {
            cni_version,
            code: self.code,
            msg: self.msg,
            details: &self.details,
        })
        .expect("an error result always serialises")
    }
}
