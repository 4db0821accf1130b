//! PLACEHOLDER: replaced by the module owner.

use std::process::ExitCode;

pub(crate) fn main(_args: &[String]) -> ExitCode {
    let _ = crate::project_root();
    ExitCode::from(2)
}
