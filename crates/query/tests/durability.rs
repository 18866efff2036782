//! Concurrency, crash safety, graceful shutdown, restarts and purge, against
//! the real binary.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{Server, doc, ingest_request, run_cli};
use kbeast_client::{SearchMode, SearchRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ingest_and_search_keep_exact_counts() {
    let server = Server::start(&["--chunk-size", "64", "--chunk-overlap", "8"]).await;
    let client = server.admin();
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut chunks = BTreeMap::new();
            for round in 0..4 {
                let docs: Vec<_> = (0..3)
                    .map(|i| {
                        let id = format!("w{worker}-d{}", (round * 3 + i) % 9);
                        let text = format!(
                            "Worker {worker} round {round} item {i}. {}",
                            "Lorem ipsum dolor sit amet. ".repeat(1 + (worker + round + i) % 4)
                        );
                        doc(&id, &text)
                    })
                    .collect();
                let response = client.ingest(&ingest_request(docs)).await.unwrap();
                for d in response.documents {
                    // A later ingest of the same id replaces the earlier one.
                    chunks.insert(d.id, u64::from(d.chunks));
                }
                let mode = [SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid][round % 3];
                let result = client
                    .search(&SearchRequest::new(
                        format!("worker {worker} lorem"),
                        mode,
                        10,
                    ))
                    .await
                    .unwrap();
                assert!(!result.hits.is_empty());
            }
            chunks
        }));
    }
    let mut expected = BTreeMap::new();
    for task in tasks {
        expected.extend(task.await.unwrap());
    }
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.documents, 32 * 9);
    assert_eq!(stats.documents, expected.len() as u64);
    assert_eq!(stats.chunks, expected.values().sum::<u64>());
    // Every document is readable with the chunk count its last ingest reported.
    for id in ["w0-d0", "w7-d4", "w31-d8"] {
        let document = client.get_document(id).await.unwrap();
        assert_eq!(document.chunks.len() as u64, expected[id], "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_documents_survive_sigkill() {
    let mut server = Server::start(&[]).await;
    let client = server.admin();
    let acked = Arc::new(Mutex::new(Vec::<(String, u32)>::new()));
    let mut writers = Vec::new();
    for worker in 0..4 {
        let client = client.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let id = format!("crash-{worker}-{n}");
                let text = format!("Document {n} from writer {worker}. ").repeat(3);
                match client.ingest(&ingest_request(vec![doc(&id, &text)])).await {
                    Ok(response) => acked
                        .lock()
                        .unwrap()
                        .push((id, response.documents[0].chunks)),
                    Err(_) => break, // the server is gone
                }
            }
        }));
    }
    // Kill mid-stream, once a fair number of writes were acknowledged.
    loop {
        if acked.lock().unwrap().len() >= 40 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill();
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    server.restart().await;
    let stats = client.stats().await.unwrap();
    assert!(
        stats.documents >= acked.len() as u64,
        "{stats:?} < {}",
        acked.len()
    );
    for (id, chunks) in &acked {
        let document = client
            .get_document(id)
            .await
            .unwrap_or_else(|e| panic!("acknowledged {id} lost: {e}"));
        assert_eq!(document.chunks.len() as u32, *chunks);
    }
    // The restarted server is fully functional.
    client
        .ingest(&ingest_request(vec![doc("after", "after the crash")]))
        .await
        .unwrap();
    let hits = client
        .search(&SearchRequest::new("crash", SearchMode::Keyword, 5))
        .await
        .unwrap()
        .hits;
    assert_eq!(hits[0].doc_id, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_writes_and_exits_cleanly() {
    let mut server = Server::start(&[]).await;
    let client = server.admin();
    let mut writers = Vec::new();
    for worker in 0..8 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..20 {
                let id = format!("term-{worker}-{n}");
                match client
                    .ingest(&ingest_request(vec![doc(&id, "graceful shutdown")]))
                    .await
                {
                    Ok(_) => acked.push(id),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    // Wait until writes are flowing, then ask the server to stop.
    while client.stats().await.unwrap().documents < 8 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let status = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "exit status {status}:\n{}", server.log());
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }
    assert!(server.log().contains("shutdown complete"));

    server.restart().await;
    for id in &acked {
        client
            .get_document(id)
            .await
            .unwrap_or_else(|e| panic!("acknowledged {id} lost: {e}"));
    }
}

#[tokio::test]
async fn refuses_a_table_built_with_another_dimension() {
    let mut server = Server::start(&[]).await;
    server
        .admin()
        .ingest(&ingest_request(vec![doc("a", "kept")]))
        .await
        .unwrap();
    assert!(server.terminate().success());

    let data = server.data_dir();
    let output = run_cli(&[
        "serve",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", common::free_port()),
        "--embedding-dim",
        "64",
    ]);
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(
        log.contains("dimension 384") && log.contains("dimension 64"),
        "unclear error:\n{log}"
    );
    // The data is untouched and still served with the original settings.
    server.restart().await;
    assert_eq!(server.admin().stats().await.unwrap().documents, 1);
}

#[tokio::test]
async fn purge_deletes_the_data() {
    let mut server = Server::start(&[]).await;
    let old_key = server.admin_key();
    server
        .admin()
        .ingest(&ingest_request(vec![
            doc("a", "to be purged"),
            doc("b", "also"),
        ]))
        .await
        .unwrap();
    assert!(server.terminate().success());

    let data = server.data_dir();
    let output = run_cli(&["purge", "--data", data.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(!data.join("chunks.lance").exists());
    assert!(!data.join("api-keys.yaml").exists());

    server.restart().await;
    assert_ne!(server.admin_key(), old_key, "a fresh key was generated");
    assert_eq!(server.admin().stats().await.unwrap().documents, 0);
    // Purging twice is fine.
    server.kill();
    assert!(
        run_cli(&["purge", "--data", data.to_str().unwrap()])
            .status
            .success()
    );
}

#[tokio::test]
async fn snapshot_while_serving_then_restore() {
    let mut server = Server::start(&[]).await;
    let client = server.admin();
    client
        .ingest(&ingest_request(vec![
            doc("a", "apples grow on trees"),
            doc("b", "bananas are yellow"),
        ]))
        .await
        .unwrap();
    let snapshot = tempfile::tempdir().unwrap();
    let out = snapshot.path().join("snap");
    let data = server.data_dir();
    let output = run_cli(&[
        "snapshot",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    // Snapshotting onto an existing snapshot is refused.
    let again = run_cli(&[
        "snapshot",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());

    // Changes after the snapshot...
    client.delete_document("a").await.unwrap();
    client
        .ingest(&ingest_request(vec![doc("c", "cherries are red")]))
        .await
        .unwrap();
    assert!(server.terminate().success());

    // ...are undone by a restore, which refuses to overwrite without --force.
    let restore = [
        "restore",
        "--from",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ];
    let refused = run_cli(&restore);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("--force"));
    let forced = run_cli(&[&restore[..], &["--force"]].concat());
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stdout)
    );

    server.restart().await;
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.documents, stats.chunks), (2, 2));
    assert!(client.get_document("c").await.is_err());
    let hits = client
        .search(&SearchRequest::new("apples trees", SearchMode::Hybrid, 1))
        .await
        .unwrap()
        .hits;
    assert_eq!(hits[0].doc_id, "a");
    let hits = client
        .search(&SearchRequest::new("yellow", SearchMode::Keyword, 5))
        .await
        .unwrap()
        .hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].doc_id, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_optimizes_and_builds_the_vector_index() {
    let server = Server::start(&[
        "--optimize-every-commits",
        "5",
        "--index-every-chunks",
        "100",
        "--vector-index-min-rows",
        "300",
    ])
    .await;
    let client = server.admin();
    let words = [
        "amber", "birch", "cedar", "dune", "ember", "fjord", "grove", "heath",
    ];
    for batch in 0..6 {
        let docs = (0..60)
            .map(|i| {
                let n = batch * 60 + i;
                let text = format!(
                    "note{n} about {} and {} near {}",
                    words[n % 8],
                    words[(n / 8) % 8],
                    words[(n / 64) % 8]
                );
                doc(&format!("m{n}"), &text)
            })
            .collect();
        client.ingest(&ingest_request(docs)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let done = |log: String| {
        [
            "updated the indices",
            "built the vector index",
            "optimized the table",
        ]
        .iter()
        .all(|line| log.contains(line))
    };
    while !done(server.log()) {
        assert!(
            std::time::Instant::now() < deadline,
            "no maintenance:\n{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Everything is still there and found, through the new indices.
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.documents, stats.chunks), (360, 360));
    let hits = client
        .search(&SearchRequest::new("note123", SearchMode::Keyword, 3))
        .await
        .unwrap()
        .hits;
    assert_eq!(hits[0].doc_id, "m123");
    let hits = client
        .search(&SearchRequest::new(
            "note77 about fjord and birch near birch",
            SearchMode::Vector,
            3,
        ))
        .await
        .unwrap()
        .hits;
    assert_eq!(hits[0].doc_id, "m77");
    // Writes keep working after maintenance.
    client
        .ingest(&ingest_request(vec![doc("late", "late arrival")]))
        .await
        .unwrap();
    assert_eq!(client.stats().await.unwrap().documents, 361);

    // Commits 8 to 10 grow the table from the 300 chunks the index was trained
    // on to 541, more than a fifth: the maintenance at commit 10 retrains it.
    for batch in 0..3 {
        let docs = (0..60)
            .map(|i| {
                let n = 1000 + batch * 60 + i;
                doc(
                    &format!("g{n}"),
                    &format!("growth{n} about {}", words[n % 8]),
                )
            })
            .collect();
        client.ingest(&ingest_request(docs)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !server.log().contains("retrained the vector index") {
        assert!(
            std::time::Instant::now() < deadline,
            "no retraining:\n{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let hits = client
        .search(&SearchRequest::new(
            "growth1100 about ember",
            SearchMode::Vector,
            3,
        ))
        .await
        .unwrap()
        .hits;
    assert_eq!(hits[0].doc_id, "g1100");
    assert_eq!(client.stats().await.unwrap().chunks, 541);
}

fn snapshot_of(server: &Server, out: &std::path::Path) {
    let output = run_cli(&[
        "snapshot",
        "--data",
        server.data_dir().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

fn restore_into(server: &Server, from: &std::path::Path) -> std::process::Output {
    run_cli(&[
        "restore",
        "--from",
        from.to_str().unwrap(),
        "--data",
        server.data_dir().to_str().unwrap(),
        "--force",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_is_refused_while_a_server_runs_on_the_data() {
    let server = Server::start(&[]).await;
    let client = server.admin();
    client
        .ingest(&ingest_request(vec![doc("a", "apples grow on trees")]))
        .await
        .unwrap();
    let snapshot = tempfile::tempdir().unwrap();
    let out = snapshot.path().join("snap");
    snapshot_of(&server, &out);
    client
        .ingest(&ingest_request(vec![doc("b", "bananas are yellow")]))
        .await
        .unwrap();

    let refused = restore_into(&server, &out);
    assert!(!refused.status.success());
    let message =
        String::from_utf8_lossy(&refused.stdout) + String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("server is running"), "{message}");
    // The live server's table is untouched.
    assert_eq!(client.stats().await.unwrap().documents, 2);
    assert!(client.get_document("b").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_leaves_the_table_as_it_was() {
    let mut server = Server::start(&[]).await;
    let client = server.admin();
    client
        .ingest(&ingest_request(vec![
            doc("a", "apples grow on trees"),
            doc("b", "bananas are yellow"),
        ]))
        .await
        .unwrap();
    let snapshot = tempfile::tempdir().unwrap();
    let out = snapshot.path().join("snap");
    snapshot_of(&server, &out);
    client
        .ingest(&ingest_request(vec![doc("c", "cherries are red")]))
        .await
        .unwrap();
    assert!(server.terminate().success());

    // The snapshot's data files are gone: the copy fails while reading rows.
    std::fs::remove_dir_all(out.join("chunks.lance").join("data")).unwrap();
    let failed = restore_into(&server, &out);
    assert!(!failed.status.success());

    server.restart().await;
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.documents, 3, "the failed restore dropped the table");
    let hits = client
        .search(&SearchRequest::new("cherries", SearchMode::Keyword, 1))
        .await
        .unwrap()
        .hits;
    assert_eq!(hits[0].doc_id, "c");
}
