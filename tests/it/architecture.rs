//! ARCHITECTURE.md's invariant "no module imports another in a circle",
//! checked on the source by `scripts/module-cycles.py` at both levels (a
//! file, and a top-level module with everything under it).

use std::process::Command;

#[test]
fn no_module_imports_another_in_a_circle() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/module-cycles.py");
    for level in ["file", "top"] {
        let out = Command::new("python3")
            .arg(script)
            .arg(level)
            .output()
            .expect("python3 runs scripts/module-cycles.py");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.starts_with("0 cycle(s)"),
            "module cycles at {level} level:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
