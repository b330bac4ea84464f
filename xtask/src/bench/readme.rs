//! The README's generated part of its Performance section: the text between
//! two markers is replaced by the latest results, the rest is left alone.

use anyhow::{Result, bail};

pub(super) const BEGIN: &str = "<!-- cargo xtask bench: results begin -->";
pub(super) const END: &str =
    "<!-- cargo xtask bench: results end (everything between these markers is generated) -->";

/// `readme` with the text between [`BEGIN`] and [`END`] replaced by `block`.
pub(super) fn replace_block(readme: &str, block: &str) -> Result<String> {
    let (Some(begin), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        bail!("the README has no `{BEGIN}` ... `{END}` markers to put the results between");
    };
    if end < begin || readme.matches(BEGIN).count() != 1 || readme.matches(END).count() != 1 {
        bail!("the README's bench markers must appear once each, begin before end");
    }
    let mut out = String::with_capacity(readme.len() + block.len());
    out.push_str(&readme[..begin + BEGIN.len()]);
    out.push_str("\n\n");
    out.push_str(block.trim());
    out.push_str("\n\n");
    out.push_str(&readme[end..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_between_the_markers() {
        let readme =
            format!("# x\n\n## Performance\n\nintro\n\n{BEGIN}\nold table\n{END}\n\nafter\n");
        let new = replace_block(&readme, "| new |\n").unwrap();
        assert_eq!(
            new,
            format!("# x\n\n## Performance\n\nintro\n\n{BEGIN}\n\n| new |\n\n{END}\n\nafter\n")
        );
        // Idempotent.
        assert_eq!(replace_block(&new, "| new |").unwrap(), new);
    }

    #[test]
    fn refuses_a_readme_without_proper_markers() {
        assert!(replace_block("# x\n", "t").is_err());
        assert!(replace_block(&format!("{END}\n{BEGIN}\n"), "t").is_err());
        assert!(replace_block(&format!("{BEGIN}\n{BEGIN}\n{END}\n"), "t").is_err());
    }
}
