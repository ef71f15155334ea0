//! Compiles the C++ glue (the RocksDB `FileSystem` and the `DB` shim) and links Debian's
//! `librocksdb`. The glue is linked `+whole-archive`: nothing in Rust references the
//! `FileSystem` registrar, and without it the linker would drop the object and the `oxblob`
//! URI scheme would never be registered.

fn main() {
    println!("cargo:rerun-if-changed=cpp/oxblob_fs.cc");
    println!("cargo:rerun-if-changed=cpp/oxblob_db.cc");
    println!("cargo:rerun-if-changed=cpp/oxblob_ffi.h");
    let have_headers = std::path::Path::new("/usr/include/rocksdb/file_system.h").exists();
    if !have_headers {
        println!(
            "cargo:warning=RocksDB headers not found (/usr/include/rocksdb): install librocksdb-dev (scripts/setup.sh)"
        );
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("cpp/oxblob_fs.cc")
        .file("cpp/oxblob_db.cc")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-invalid-offsetof")
        .cargo_metadata(false)
        .compile("oxblob_rocksdb_glue");
    let out = std::env::var("OUT_DIR").unwrap_or_default();
    println!("cargo:rustc-link-search=native={out}");
    println!("cargo:rustc-link-lib=static:+whole-archive=oxblob_rocksdb_glue");
    println!("cargo:rustc-link-lib=dylib=rocksdb");
    println!("cargo:rustc-link-lib=dylib=stdc++");
}
