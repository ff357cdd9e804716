//! Embeds libtorch's directory as an rpath so `framecast-replica` and its test binaries run
//! without LD_LIBRARY_PATH. torch-sys reports the directory it linked against as
//! DEP_TCH_LIBTORCH_LIB (its `links = "tch"`), whichever way it found libtorch.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(lib_dir) => println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}"),
        Err(_) => println!(
            "cargo:warning=torch-sys did not report its libtorch directory; \
             binaries will need LD_LIBRARY_PATH (run scripts/setup)"
        ),
    }
}
