//! One suite, run against a real server on port 0 and against `memory://`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ratekeeper_backend::Embedded;
use ratekeeper_client::{Client, Error};
use ratekeeper_core::LimitSpec;
use ratekeeper_server::ServerConfig;

/// A server on port 0 with a temporary durable store; its URL.
async fn start_server() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(Embedded::open(dir.path()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ratekeeper_server::serve(
        listener,
        backend,
        ServerConfig::default(),
        std::future::pending(),
    ));
    (url, dir)
}

fn memory_url() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "memory://client-test-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `test` with a client of a fresh server, then of a fresh in-process
/// engine.
async fn on_both<F, Fut>(test: F)
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    let (url, _dir) = start_server().await;
    test(Client::connect(&url).unwrap()).await;
    test(Client::connect(&memory_url()).unwrap()).await;
}

async fn create(client: &Client, name: &str, slots: u64) {
    let spec = LimitSpec::concurrency(name, slots);
    client.create_limit(spec).await.unwrap();
}

async fn held(client: &Client, name: &str) -> u64 {
    client.limit(name).await.unwrap().held
}

async fn until_waiting(client: &Client, name: &str, count: u64) {
    for _ in 0..2000 {
        if client.limit(name).await.unwrap().waiting == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("{name} never had {count} waiters");
}

#[tokio::test]
async fn a_guard_releases_on_drop_and_on_release() {
    on_both(|client| async move {
        create(&client, "db", 1).await;
        let guard = client.concurrency("db").holder("test").await.unwrap();
        assert_eq!(held(&client, "db").await, 1);
        let refused = client
            .concurrency("db")
            .timeout(Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(refused, Error::WouldBlock);
        drop(guard);
        // Released in the background: wait for it, then take it again.
        let again = client
            .concurrency("db")
            .timeout(Duration::from_secs(5))
            .await
            .unwrap();
        again.release().await.unwrap();
        assert_eq!(held(&client, "db").await, 0);
    })
    .await;
}

#[tokio::test]
async fn renewal_keeps_a_lease_past_its_ttl() {
    on_both(|client| async move {
        create(&client, "db", 1).await;
        let guard = client
            .concurrency("db")
            .lease(Duration::from_secs(1))
            .await
            .unwrap();
        let first_expiry = guard.expires_at().unwrap();
        // Work that outlasts the TTL.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!guard.is_lost());
        assert!(guard.expires_at().unwrap() > first_expiry);
        assert_eq!(held(&client, "db").await, 1);
        guard.release().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_revoked_lease_is_reported_lost() {
    on_both(|client| async move {
        create(&client, "db", 1).await;
        let guard = client
            .concurrency("db")
            .lease(Duration::from_secs(1))
            .await
            .unwrap();
        client.reset_limit("db").await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), guard.lost())
            .await
            .unwrap();
        assert!(
            matches!(&err, Error::LeaseLost { code, .. } if code == "lease_revoked"),
            "{err}"
        );
        assert!(guard.is_lost());
        assert!(matches!(
            guard.release().await,
            Err(Error::LeaseLost { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn waits_time_out_and_are_withdrawn_when_dropped() {
    on_both(|client| async move {
        create(&client, "db", 1).await;
        let _holder = client.concurrency("db").await.unwrap();
        let started = Instant::now();
        let err = client
            .concurrency("db")
            .timeout(Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err, Error::Timeout);
        assert!(started.elapsed() >= Duration::from_millis(100));

        let waiter = {
            let client = client.clone();
            tokio::spawn(async move { client.concurrency("db").await.map(drop) })
        };
        until_waiting(&client, "db", 1).await;
        waiter.abort();
        until_waiting(&client, "db", 0).await;
    })
    .await;
}

#[tokio::test]
async fn a_waiter_gets_the_slot_when_it_is_released() {
    on_both(|client| async move {
        create(&client, "db", 1).await;
        let holder = client.concurrency("db").await.unwrap();
        let waiter = {
            let client = client.clone();
            tokio::spawn(async move { client.concurrency("db").holder("second").await })
        };
        until_waiting(&client, "db", 1).await;
        holder.release().await.unwrap();
        let second = waiter.await.unwrap().unwrap();
        assert!(second.waited() > Duration::ZERO);
        second.release().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn multi_name_requests_hold_every_limit() {
    on_both(|client| async move {
        create(&client, "db", 4).await;
        create(&client, "api", 2).await;
        let both = client.concurrency(["db", "api"]).occupy(2).await.unwrap();
        assert_eq!(
            (held(&client, "db").await, held(&client, "api").await),
            (2, 2)
        );
        let err = client
            .concurrency("api")
            .timeout(Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(err, Error::WouldBlock);
        let err = client
            .concurrency(["db", "api"])
            .occupy(3)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { code, .. } if code == "occupy_exceeds_slots"),
            "{err}"
        );
        both.release().await.unwrap();
        let err = client.concurrency("nowhere").await.unwrap_err();
        assert!(matches!(err, Error::LimitNotFound(_)), "{err}");
    })
    .await;
}

#[tokio::test]
async fn rate_limits_space_calls_out() {
    on_both(|client| async move {
        client
            .create_limit(LimitSpec::rate("api", 200.0, 1))
            .await
            .unwrap();
        let started = Instant::now();
        for _ in 0..11 {
            client.rate_limit("api").await.unwrap();
        }
        // 1 at once, then one every 5 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "{:?}",
            started.elapsed()
        );
        let err = client
            .rate_limit("api")
            .timeout(Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(err, Error::WouldBlock);
    })
    .await;
}

#[test]
fn blocking_clients_hold_slots_across_threads_and_release_on_panic() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (url, _dir) = runtime.block_on(start_server());
    for url in [url, memory_url()] {
        let client = Client::connect_blocking(&url, None).unwrap();
        client
            .block_on(client.create_limit(LimitSpec::concurrency("db", 2)))
            .unwrap();
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (client, inside, most) = (client.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let guard = client.concurrency("db").wait().unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(guard);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);

        let panicking = client.clone();
        let result = std::thread::spawn(move || {
            let _guard = panicking.concurrency("db").occupy(2).wait().unwrap();
            panic!("the holder crashes");
        })
        .join();
        assert!(result.is_err());
        // Dropped while unwinding: both slots are free again at once.
        let state = client.block_on(client.limit("db")).unwrap();
        assert_eq!(state.held, 0);
    }
}

#[tokio::test]
async fn bad_urls_and_unreachable_servers_are_reported() {
    let err = Client::connect("ftp://example.com").unwrap_err();
    assert!(matches!(err, Error::InvalidUrl(_)), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::connect(&format!("http://127.0.0.1:{port}")).unwrap();
    let started = Instant::now();
    let err = client.concurrency("db").await.unwrap_err();
    assert!(
        matches!(&err, Error::Connect { url, .. } if url.ends_with(&port.to_string())),
        "{err}"
    );
    // Never reached: reported at once, not retried for the reconnect window.
    assert!(started.elapsed() < Duration::from_secs(2));
}
