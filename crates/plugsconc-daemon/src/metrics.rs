//! Prometheus metrics at `/metrics`: calls, errors and latency per plugin and method (through
//! the API's call endpoint), and, read at each scrape, every plugin's status, restarts and
//! reloads, and the CPU time and RSS of each running plugin process (from `/proc`); the job
//! pool's counters and job durations, as plain values its callers report. A leaf: it knows the
//! catalog, not the modules that feed it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plugsconc_host::{Query, Registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as Exposition;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    method: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    plugin: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    plugin: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    count: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobOutcomeLabels {
    task: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    plugin: String,
    resource: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~26 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-4, 4.0, 10,
    ))
}

/// The job pool's counters at a scrape, as the `plugsconc_jobs{count=...}` gauges show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobGauges {
    /// Jobs accepted.
    pub submitted: u64,
    /// Submissions refused.
    pub rejected: u64,
    /// Jobs that succeeded here.
    pub succeeded: u64,
    /// Jobs that failed here.
    pub failed: u64,
    /// Jobs cancelled here.
    pub cancelled: u64,
    /// Attempts retried.
    pub retries: u64,
    /// Jobs on a worker here now.
    pub in_flight: u64,
    /// Jobs waiting for a worker.
    pub queued: u64,
    /// Jobs of dead workers settled here.
    pub recovered: u64,
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    exposition: Mutex<Exposition>,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    status: Family<StatusLabels, Gauge>,
    restarts: Family<PluginLabels, Gauge>,
    reloads: Family<PluginLabels, Gauge>,
    cpu: Family<PluginLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    rss: Family<PluginLabels, Gauge>,
    alerts: Family<AlertLabels, Counter>,
    jobs: Family<JobLabels, Gauge>,
    job_durations: Family<JobOutcomeLabels, Histogram, fn() -> Histogram>,
    calls_total: AtomicU64,
    errors_total: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut exposition = Exposition::with_prefix("plugsconc");
        let metrics = Self {
            exposition: Mutex::new(Exposition::default()),
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            status: Family::default(),
            restarts: Family::default(),
            reloads: Family::default(),
            cpu: Family::default(),
            rss: Family::default(),
            alerts: Family::default(),
            jobs: Family::default(),
            job_durations: Family::new_with_constructor(latency_histogram),
            calls_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
        };
        exposition.register(
            "calls",
            "Plugin calls through the API, by outcome",
            metrics.calls.clone(),
        );
        exposition.register(
            "call_duration_seconds",
            "Latency of plugin calls through the API",
            metrics.latency.clone(),
        );
        exposition.register(
            "plugin_status",
            "1 for each plugin's current status",
            metrics.status.clone(),
        );
        exposition.register(
            "plugin_restarts",
            "Restarts after crashes",
            metrics.restarts.clone(),
        );
        exposition.register(
            "plugin_reloads",
            "Successful hot reloads",
            metrics.reloads.clone(),
        );
        exposition.register(
            "plugin_cpu_seconds",
            "CPU time of the plugin process (user + system)",
            metrics.cpu.clone(),
        );
        exposition.register(
            "plugin_rss_bytes",
            "Resident memory of the plugin process",
            metrics.rss.clone(),
        );
        exposition.register(
            "resource_alerts",
            "Samples over a limit of the plugin's manifest resources",
            metrics.alerts.clone(),
        );
        exposition.register(
            "jobs",
            "The job pool's counters: submitted, rejected, succeeded, failed, cancelled, retries; in_flight and queued now",
            metrics.jobs.clone(),
        );
        exposition.register(
            "job_duration_seconds",
            "Duration of the jobs this daemon ran, from the first attempt's start to the end, by task and final state",
            metrics.job_durations.clone(),
        );
        *metrics
            .exposition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = exposition;
        metrics
    }
}

impl Metrics {
    /// Records a resource alert.
    pub fn resource_alert(&self, plugin: &str, resource: &str) {
        self.alerts
            .get_or_create(&AlertLabels {
                plugin: plugin.to_owned(),
                resource: resource.to_owned(),
            })
            .inc();
    }

    /// Records one call.
    pub fn observe_call(&self, plugin: &str, method: &str, ok: bool, seconds: f64) {
        self.calls_total.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors_total.fetch_add(1, Ordering::Relaxed);
        }
        self.calls
            .get_or_create(&CallLabels {
                plugin: plugin.to_owned(),
                method: method.to_owned(),
                outcome: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                plugin: plugin.to_owned(),
                method: method.to_owned(),
            })
            .observe(seconds);
    }

    /// (calls, errors) so far.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.calls_total.load(Ordering::Relaxed),
            self.errors_total.load(Ordering::Relaxed),
        )
    }

    /// Counts a job this daemon finished: its task, its final state (`succeeded`, `failed`,
    /// `cancelled`) and how long it took from its first attempt's start.
    pub fn job_finished(&self, task: &str, outcome: &str, duration: Duration) {
        self.job_durations
            .get_or_create(&JobOutcomeLabels {
                task: task.to_owned(),
                state: outcome.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// The exposition text, with the per-plugin values read now.
    pub fn render(&self, catalog: &Registry, jobs: &JobGauges) -> String {
        for (name, value) in [
            ("submitted", jobs.submitted),
            ("rejected", jobs.rejected),
            ("succeeded", jobs.succeeded),
            ("failed", jobs.failed),
            ("cancelled", jobs.cancelled),
            ("retries", jobs.retries),
            ("in_flight", jobs.in_flight),
            ("queued", jobs.queued),
            ("recovered", jobs.recovered),
        ] {
            self.jobs
                .get_or_create(&JobLabels {
                    count: name.to_owned(),
                })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        self.status.clear();
        self.cpu.clear();
        self.rss.clear();
        for info in catalog.list(&Query::default()) {
            let plugin = PluginLabels {
                plugin: info.name.clone(),
            };
            self.status
                .get_or_create(&StatusLabels {
                    plugin: info.name.clone(),
                    status: info.status.to_string(),
                })
                .set(1);
            self.restarts
                .get_or_create(&plugin)
                .set(i64::from(info.restarts));
            self.reloads
                .get_or_create(&plugin)
                .set(i64::from(info.reloads));
            if let Some((cpu, rss)) = info.pid.and_then(process_usage) {
                self.cpu.get_or_create(&plugin).set(cpu);
                self.rss
                    .get_or_create(&plugin)
                    .set(i64::try_from(rss).unwrap_or(i64::MAX));
            }
        }
        let mut text = String::new();
        let exposition = self
            .exposition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if prometheus_client::encoding::text::encode(&mut text, &exposition).is_err() {
            text.clear();
        }
        text
    }
}

/// CPU seconds and resident bytes of a process, from `/proc`.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
    plugsconc_host::monitor::Sampler::new(pid)
        .sample()
        .map(|usage| (usage.cpu_seconds, usage.rss_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process_and_renders_calls() {
        let (cpu, rss) = process_usage(std::process::id()).unwrap();
        assert!(cpu >= 0.0 && rss > 1024 * 1024);
        let metrics = Metrics::default();
        metrics.observe_call("cat", "animal.Animal/Speak", true, 0.002);
        metrics.observe_call("cat", "animal.Animal/Speak", false, 0.5);
        assert_eq!(metrics.totals(), (2, 1));
        let catalog = Registry::new(plugsconc_host::RegistryOptions::default());
        metrics.job_finished("sleep", "succeeded", Duration::from_millis(1500));
        let jobs = JobGauges {
            queued: 7,
            ..JobGauges::default()
        };
        let text = metrics.render(&catalog, &jobs);
        assert!(
            text.contains(r#"plugsconc_jobs{count="queued"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"plugsconc_job_duration_seconds_sum{task="sleep",state="succeeded"} 1.5"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"plugsconc_calls_total{plugin="cat",method="animal.Animal/Speak",outcome="error"} 1"#), "{text}");
        assert!(
            text.contains("plugsconc_call_duration_seconds_bucket"),
            "{text}"
        );
    }
}
