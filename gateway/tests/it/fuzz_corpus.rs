//! The fuzz targets' kept corpus (`fuzz/corpus/<target>/`), replayed through the same code on
//! the stable toolchain: every input libFuzzer found interesting, or was given, still passes
//! (no panic, round trips hold). The fuzzing itself runs with `cargo fuzz` (`fuzz/`).

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::env::var_os("FUZZ_CORPUS_TRACE").is_some() {
            eprintln!("{}", path.display());
        }
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        n += 1;
    }
    n
}

#[test]
fn the_kept_fuzz_corpus_passes_every_target() {
    use gateway::fuzz;
    type Target = (&'static str, fn(&[u8]));
    let targets: [Target; 5] = [
        ("frame_json", fuzz::frame_json),
        ("frame_msgpack", fuzz::frame_msgpack),
        ("bus", fuzz::bus),
        ("settings", fuzz::settings),
        ("api_body", fuzz::api_body),
    ];
    for (target, run) in targets {
        assert!(replay(target, run) > 0, "{target} has a corpus");
    }
}
