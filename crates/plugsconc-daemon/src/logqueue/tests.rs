use std::sync::{Arc, Mutex, PoisonError};

use super::*;

/// A sink the test can read, and make fail.
#[derive(Clone, Default)]
struct Shared {
    text: Arc<Mutex<String>>,
    broken: Arc<std::sync::atomic::AtomicBool>,
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.broken.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("disk full"));
        }
        self.text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn lines(&self) -> Vec<String> {
        self.text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn config(dir: &Path) -> QueueConfig {
    QueueConfig {
        db: dir.join("logs.db"),
        queue: "app_logs".into(),
        remove_on_complete: false,
        max_pending: 1000,
        block: false,
        keep: 1000,
        drain_interval: Duration::ZERO,
    }
}

fn event(layer: &QueueLayer, message: &str, plugin: Option<&str>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    let subscriber = tracing_subscriber::registry().with(layer.clone());
    tracing::subscriber::with_default(subscriber, || match plugin {
        Some(plugin) => tracing::info!(plugin, "{message}"),
        None => tracing::warn!(count = 3, "{message}"),
    });
}

fn messages(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            value["fields"]["message"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn events_are_committed_then_written_in_order_and_kept_for_reading() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Shared::default();
    let (layer, guard) = start(config(dir.path()), Some(Box::new(sink.clone()))).unwrap();
    for i in 0..50 {
        event(&layer, &format!("line {i}"), (i % 2 == 0).then_some("kv"));
    }
    drop(guard);
    let written = messages(&sink.lines());
    let expected: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
    assert_eq!(written, expected);
    let first: Value = serde_json::from_str(&sink.lines()[0]).unwrap();
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["fields"]["plugin"], "kv");
    assert_eq!(first["target"], "plugsconc_daemon::logqueue::tests");

    // Read back: the kv plugin's records only, after a given id.
    let pool = block_on(open(&dir.path().join("logs.db"), false)).unwrap();
    let filter = Filter {
        plugin: Some("kv".into()),
        limit: 100,
        ..Filter::default()
    };
    let kv = block_on(read(&pool, "app_logs", &filter)).unwrap();
    assert_eq!(kv.len(), 25);
    let after = Filter {
        after: kv[9].0,
        ..filter
    };
    assert_eq!(block_on(read(&pool, "app_logs", &after)).unwrap().len(), 15);
    let warnings = Filter {
        min_level: rank("warn"),
        limit: 100,
        ..Filter::default()
    };
    assert_eq!(
        block_on(read(&pool, "app_logs", &warnings)).unwrap().len(),
        25
    );
}

#[test]
fn what_was_committed_but_not_written_is_written_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    // A run whose file cannot be written: records are acknowledged and wait.
    let broken = Shared::default();
    broken
        .broken
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (layer, guard) = start(config(dir.path()), Some(Box::new(broken.clone()))).unwrap();
    for i in 0..20 {
        event(&layer, &format!("before the crash {i}"), None);
    }
    drop(guard);
    assert!(broken.lines().is_empty());
    // The next run starts with them, oldest first, before anything new.
    let sink = Shared::default();
    let (layer, guard) = start(config(dir.path()), Some(Box::new(sink.clone()))).unwrap();
    event(&layer, "after the restart", None);
    drop(guard);
    let written = messages(&sink.lines());
    assert_eq!(written.len(), 21);
    assert_eq!(written[0], "before the crash 0");
    assert_eq!(written[19], "before the crash 19");
    assert_eq!(written[20], "after the restart");
}

#[test]
fn a_full_queue_drops_its_oldest_records_and_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let broken = Shared::default();
    broken
        .broken
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut cfg = config(dir.path());
    cfg.max_pending = 10;
    let (layer, guard) = start(cfg.clone(), Some(Box::new(broken))).unwrap();
    for i in 0..30 {
        event(&layer, &format!("record {i}"), None);
    }
    drop(guard);
    let sink = Shared::default();
    cfg.max_pending = 1000;
    let (_layer, guard) = start(cfg, Some(Box::new(sink.clone()))).unwrap();
    drop(guard);
    let written = messages(&sink.lines());
    // The newest records survive, in order, with warnings counting what was dropped.
    let kept: Vec<&String> = written
        .iter()
        .filter(|m| m.starts_with("record "))
        .collect();
    assert_eq!(kept.last().map(|m| m.as_str()), Some("record 29"));
    let first_kept: usize = kept[0].trim_start_matches("record ").parse().unwrap();
    let expected: Vec<String> = (first_kept..30).map(|i| format!("record {i}")).collect();
    assert_eq!(kept, expected.iter().collect::<Vec<_>>());
    assert!(kept.len() <= 11, "{written:?}");
    // The newest warning carries the running total (earlier warnings may have been dropped
    // too, as the oldest records at the time).
    let last: Value = serde_json::from_str(sink.lines().last().unwrap()).unwrap();
    let dropped_total = last["fields"]["dropped_total"].as_u64().unwrap();
    assert!(dropped_total as usize >= 30 - kept.len(), "{written:?}");
}

#[test]
fn records_are_deleted_once_written_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.remove_on_complete = true;
    let sink = Shared::default();
    let (layer, guard) = start(cfg, Some(Box::new(sink.clone()))).unwrap();
    event(&layer, "gone once written", None);
    drop(guard);
    assert_eq!(messages(&sink.lines()), ["gone once written"]);
    let pool = block_on(open(&dir.path().join("logs.db"), false)).unwrap();
    let all = Filter {
        limit: 10,
        ..Filter::default()
    };
    assert!(block_on(read(&pool, "app_logs", &all)).unwrap().is_empty());
}
