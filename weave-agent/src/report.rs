//! Errors as the one line a user sees after `weave: `.

/// The error and its causes joined by `: `, skipping a cause that an outer
/// message already spells out (typed errors often quote their source), and
/// with line breaks folded.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text.replace('\n', " ")
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
            one_line(&e),
            "running the container: cannot reach Docker: socket not found"
        );
        let e = anyhow::anyhow!("two\nlines");
        assert_eq!(one_line(&e), "two lines");
    }
}
