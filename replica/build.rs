//! Embeds libtorch's directory as an rpath so `framecast-replica` and its test binaries run
//! without LD_LIBRARY_PATH. torch-sys reports the directory it linked against as
//! DEP_TCH_LIBTORCH_LIB (its `links = "tch"`), whichever way it found libtorch.
//!
//! With a CUDA build of libtorch (PyPI's default torch wheel), `libtorch_cuda` is linked with
//! `--no-as-needed`: nothing references its symbols directly, so the linker would drop it and
//! `tch::Cuda::is_available()` would report false on a GPU machine.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(lib_dir) => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
            if std::path::Path::new(&lib_dir)
                .join("libtorch_cuda.so")
                .exists()
            {
                println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
            }
        }
        Err(_) => println!(
            "cargo:warning=torch-sys did not report its libtorch directory; \
             binaries will need LD_LIBRARY_PATH (run scripts/setup)"
        ),
    }
}
