//! Bundles the repository's declarations (`datasets/*.json`) into the crate, so that every
//! Lambda built from it reads the same files Terraform reads.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("datasets/ is readable")
        .map(|e| e.expect("datasets/ is readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut code = String::from("pub(crate) static BUNDLED: &[(&str, &str)] = &[\n");
    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap().to_string_lossy();
        let path = path.canonicalize().expect("a declaration's path");
        writeln!(
            code,
            "    (\"datasets/{name}\", include_str!({:?})),",
            path.display()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("bundled.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
}
