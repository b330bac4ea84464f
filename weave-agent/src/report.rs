//! Errors as text: the one line a user sees after `weave: `, and the full
//! chain of causes for logs and test failures.

use std::error::Error;

/// The error and its causes joined by `: `, skipping a cause that an outer
/// message already spells out (typed errors often quote their source). Line
/// breaks are kept: an eBPF verifier log, innermost, stays readable.
pub fn causes(error: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    let mut next: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(cause) = next {
        next = cause.source();
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// [`causes`] folded onto one line.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    causes(error).replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot reach Docker: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[test]
    fn quoted_causes_appear_once_and_context_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "socket not found");
        let e = anyhow::Error::new(Quoting { source: io }).context("running the container");
        assert_eq!(
            one_line(e.as_ref()),
            "running the container: cannot reach Docker: socket not found"
        );
        let e = anyhow::anyhow!("two\nlines");
        assert_eq!(one_line(e.as_ref()), "two lines");
        assert_eq!(causes(e.as_ref()), "two\nlines");
    }
}
