//! Prometheus exporter set-up shared by both binaries.
//!
//! Each binary renders the text exposition format on its own `/metrics` route (no second
//! listener to expose or secure), so we install only the recorder and keep its handle.

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

/// Installs the global Prometheus recorder and records `framecast_build_info`.
///
/// `component` is `router` or `replica`; dashboards use the build info to spot mixed versions.
pub fn install_recorder(component: &'static str) -> Result<PrometheusHandle, BuildError> {
    let handle = builder()?.install_recorder()?;
    describe_and_record_build_info(component);
    Ok(handle)
}

/// Histogram buckets in seconds, from one denoising step on a GPU to a slow CPU segment.
/// Real histograms (not summaries) so dashboards can aggregate quantiles across replicas.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new().set_buckets(&LATENCY_BUCKETS)
}

/// A recorder that is not installed globally, for tests that render metrics in isolation.
pub fn standalone_recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
    builder()
        .expect("static buckets are valid")
        .build_recorder()
}

fn describe_and_record_build_info(component: &'static str) {
    metrics::describe_gauge!(
        "framecast_build_info",
        "Always 1; labels carry the component and its version."
    );
    metrics::gauge!(
        "framecast_build_info",
        "component" => component,
        "version" => env!("CARGO_PKG_VERSION"),
    )
    .set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_renders_in_prometheus_text_format() {
        let recorder = standalone_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || describe_and_record_build_info("router"));
        let text = handle.render();
        assert!(text.contains("# TYPE framecast_build_info gauge"), "{text}");
        assert!(
            text.contains(r#"framecast_build_info{component="router",version=""#),
            "{text}"
        );
    }
}
