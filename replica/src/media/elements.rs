//! GStreamer start-up: initialise once, register gst-plugin-fmp4 statically, make elements.

use std::sync::OnceLock;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::MediaError;

/// Elements the video pipeline cannot do without.
pub const REQUIRED_VIDEO_ELEMENTS: [&str; 5] =
    ["appsrc", "videoconvert", "x264enc", "isofmp4mux", "appsink"];

/// Every factory a media pipeline may create, whichever encoders the config picks.
pub const PIPELINE_FACTORIES: [&str; 12] = [
    "appsrc",
    "appsink",
    "videoconvert",
    "x264enc",
    "nvh264enc",
    "capsfilter",
    "h264parse",
    "isofmp4mux",
    "audioconvert",
    "audioresample",
    "opusenc",
    "avenc_aac",
];

/// Initialises GStreamer, registers `isofmp4mux`/`cmafmux` and loads the plugins of
/// [`PIPELINE_FACTORIES`]; later calls are free.
///
/// Loading plugins here, not when a session builds its first pipeline, keeps `dlopen` off
/// session threads: a plugin opened while the process exits re-runs libgobject's
/// constructor (glibc has already finalised it) and aborts in `_g_value_types_init`, which
/// is how a test process that ended while a session was starting crashed.
pub fn init() -> Result<(), MediaError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().map_err(|e| format!("gst::init failed: {e}"))?;
        gstfmp4::plugin_register_static()
            .map_err(|e| format!("registering gst-plugin-fmp4 failed: {e}"))?;
        preload_plugins();
        Ok(())
    })
    .clone()
    .map_err(MediaError::Init)
}

/// Loads the plugin of each installed pipeline factory. One that is missing or fails to
/// load is left for [`make`] to report when a pipeline actually needs it.
fn preload_plugins() {
    for name in PIPELINE_FACTORIES {
        if let Some(factory) = gst::ElementFactory::find(name)
            && let Err(e) = factory.load()
        {
            tracing::warn!(element = name, error = %e, "cannot load GStreamer plugin");
        }
    }
}

/// Creates an element from its factory, or says which package provides it.
pub fn make(factory: &str) -> Result<gst::Element, MediaError> {
    init()?;
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| MediaError::MissingElement {
            element: factory.to_string(),
            provider: provider_of(factory),
        })
}

/// Fails with the first element of `factories` that is not installed.
pub fn require(factories: &[&str]) -> Result<(), MediaError> {
    init()?;
    for factory in factories {
        if gst::ElementFactory::find(factory).is_none() {
            return Err(MediaError::MissingElement {
                element: (*factory).to_string(),
                provider: provider_of(factory),
            });
        }
    }
    Ok(())
}

/// GStreamer's runtime version, for logs and `--version`.
pub fn gstreamer_version() -> String {
    gst::version_string().to_string()
}

/// The Debian package (or crate) an element comes from, for actionable errors.
fn provider_of(factory: &str) -> &'static str {
    match factory {
        "isofmp4mux" | "cmafmux" => "the gst-plugin-fmp4 crate (registered statically)",
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "nvh264enc" | "mpegtsmux" => "gstreamer1.0-plugins-bad",
        "avenc_aac" | "avdec_h264" => "gstreamer1.0-libav",
        "qtdemux" | "mp4mux" => "gstreamer1.0-plugins-good",
        _ => "gstreamer1.0-plugins-base",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_element_names_itself_and_a_provider() {
        let err = make("no_such_element_framecast").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`no_such_element_framecast`"), "{msg}");
        assert!(msg.contains("install"), "{msg}");
        let err = require(&["appsrc", "no_such_element_framecast"]).unwrap_err();
        assert!(
            matches!(err, MediaError::MissingElement { ref element, .. } if element == "no_such_element_framecast")
        );
    }

    #[test]
    fn init_loads_every_installed_pipeline_plugin() {
        init().unwrap();
        let mut loaded = 0;
        for name in PIPELINE_FACTORIES {
            let Some(factory) = gst::ElementFactory::find(name) else {
                continue; // e.g. nvh264enc without a GPU
            };
            if let Some(plugin) = factory.plugin() {
                assert!(plugin.is_loaded(), "{name}'s plugin is loaded at init");
                loaded += 1;
            }
        }
        // Everything the CPU path needs is installed by scripts/setup.
        assert!(loaded >= REQUIRED_VIDEO_ELEMENTS.len(), "{loaded}");
    }

    #[test]
    fn init_is_idempotent() {
        init().unwrap();
        init().unwrap();
    }
}
