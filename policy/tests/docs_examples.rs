//! Every TOML example in docs/policy.md must be right: blocks that start with
//! `version = 1` are complete policies and must load without errors or warnings; the
//! other blocks are fragments, which must be valid TOML and, loaded on their own, have no
//! errors other than references to classes they do not define.

use pgveil_policy::load::load;

const DOC: &str = include_str!("../../docs/policy.md");

/// (1-based line of the opening fence, block text) for every ```toml block.
fn toml_blocks(doc: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        match current.as_mut() {
            None if line.trim_end() == "```toml" => current = Some((i + 1, String::new())),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    assert!(
        current.is_none(),
        "docs/policy.md has an unclosed ```toml block"
    );
    blocks
}

#[test]
fn complete_policies_in_the_docs_load_cleanly() {
    let blocks = toml_blocks(DOC);
    let complete: Vec<_> = blocks
        .iter()
        .filter(|(_, text)| text.starts_with("version = 1"))
        .collect();
    // The complete example and the four recipes at least.
    assert!(
        complete.len() >= 5,
        "found only {} complete policies",
        complete.len()
    );
    for (line, text) in complete {
        let name = format!("docs/policy.md block at line {line}");
        match load(&name, text) {
            Ok(loaded) => assert!(
                loaded.warnings.is_empty(),
                "{name} loads with warnings:\n{}",
                loaded.warnings
            ),
            Err(diags) => panic!("{name} does not load:\n{diags}"),
        }
    }
}

#[test]
fn fragments_in_the_docs_are_valid() {
    let blocks = toml_blocks(DOC);
    let fragments: Vec<_> = blocks
        .iter()
        .filter(|(_, text)| !text.starts_with("version = 1"))
        .collect();
    assert!(
        fragments.len() >= 10,
        "found only {} fragments",
        fragments.len()
    );
    for (line, text) in fragments {
        if let Err(e) = toml::de::DeTable::parse(text) {
            panic!("docs/policy.md block at line {line} is not valid TOML: {e}");
        }
        let standalone = if text.lines().any(|l| l.starts_with("version")) {
            text.clone()
        } else {
            format!("version = 1\n{text}")
        };
        if let Err(diags) = load("fragment", &standalone) {
            let real: Vec<String> = diags
                .iter()
                .filter(|d| d.is_error() && !d.message.starts_with("unknown class"))
                .map(ToString::to_string)
                .collect();
            assert!(
                real.is_empty(),
                "docs/policy.md block at line {line}:\n{}",
                real.join("\n")
            );
        }
    }
}

#[test]
fn block_extraction_finds_fenced_toml_only() {
    let doc = "x\n```toml\nversion = 1\n```\n```sql\nSELECT 1\n```\n```toml\na = 1\n```\n";
    assert_eq!(
        toml_blocks(doc),
        [(2, "version = 1\n".to_string()), (8, "a = 1\n".to_string())]
    );
}
