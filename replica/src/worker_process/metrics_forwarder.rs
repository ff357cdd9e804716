//! Metrics from the worker process: a `metrics` recorder that sends every update over the
//! socket, so the server's `/metrics` shows what its workers measured.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use super::ControlSink;
use crate::pool::ipc::{Frame, FromWorker, MetricOp};

/// Sends every metric update to the server, which applies it to its own registry.
#[derive(Debug)]
pub struct ForwardingRecorder {
    sink: ControlSink,
}

/// One series; every update becomes a [`FromWorker::Metric`] frame.
struct ForwardedMetric {
    sink: ControlSink,
    name: String,
    labels: Vec<(String, String)>,
}

impl ForwardedMetric {
    fn send(&self, op: MetricOp) {
        // JSON has no NaN or infinity: such a value would arrive as `null`, the server would
        // refuse the frame and drop this worker's connection. A non-finite sample is dropped.
        if let MetricOp::GaugeIncrement(x)
        | MetricOp::GaugeDecrement(x)
        | MetricOp::GaugeSet(x)
        | MetricOp::Record(x) = op
            && !x.is_finite()
        {
            return;
        }
        let _ = self.sink.send(Frame::new(FromWorker::Metric {
            name: self.name.clone(),
            labels: self.labels.clone(),
            op,
        }));
    }
}

impl metrics::CounterFn for ForwardedMetric {
    fn increment(&self, value: u64) {
        self.send(MetricOp::Increment(value));
    }
    fn absolute(&self, value: u64) {
        self.send(MetricOp::Absolute(value));
    }
}

impl metrics::GaugeFn for ForwardedMetric {
    fn increment(&self, value: f64) {
        self.send(MetricOp::GaugeIncrement(value));
    }
    fn decrement(&self, value: f64) {
        self.send(MetricOp::GaugeDecrement(value));
    }
    fn set(&self, value: f64) {
        self.send(MetricOp::GaugeSet(value));
    }
}

impl metrics::HistogramFn for ForwardedMetric {
    fn record(&self, value: f64) {
        self.send(MetricOp::Record(value));
    }
}

impl ForwardingRecorder {
    /// A recorder sending through the worker's control channel.
    pub(super) fn new(sink: ControlSink) -> Self {
        Self { sink }
    }

    fn forward(&self, key: &Key) -> Arc<ForwardedMetric> {
        Arc::new(ForwardedMetric {
            sink: self.sink.clone(),
            name: key.name().to_string(),
            labels: key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect(),
        })
    }
}

impl Recorder for ForwardingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.forward(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.forward(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.forward(key))
    }
}
