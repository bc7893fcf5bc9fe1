//! Two controller processes' worth of schedulers on one database never overcommit a host.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{backends, cloud, cloud_on, replica_dir, FakeAgent, CAPACITY};
use serde_json::json;

#[tokio::test]
async fn two_controllers_racing_for_the_last_capacity_never_overcommit() {
    for backend in backends() {
        let a = cloud(backend, |_| {}).await;
        // A second controller on the same database, with its own scheduler.
        let b = cloud_on(replica_dir(&a), a.db_url.clone(), |_| {}).await;
        let ta = a.tenant("acme").await;
        let tb = b.login("acme-user", "password-123").await;
        // 20 instances are more than a tenant's default quota; this test is about host capacity.
        let unlimited = json!({"instances": -1, "vcpus": -1, "ram_mib": -1});
        let (s, body) =
            a.call(axum::http::Method::PUT, "/v1/projects/acme/quotas", Some(&a.admin), Some(unlimited)).await;
        assert!(s.is_success(), "{body}");
        a.kernel_image("tiny").await;
        // 4096 MiB of memory at ratio 1.0: room for exactly 8 `mini` (512 MiB) instances.
        let _agent = FakeAgent::register(&a, "host-a", CAPACITY).await;
        let run = |c: &common::Cloud, t: String| {
            let router = c.router.clone();
            async move {
                let req = axum::http::Request::post("/v1/instances")
                    .header("authorization", format!("Bearer {t}"))
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(json!({"name": "race", "flavor": "mini", "count": 10}).to_string()))
                    .unwrap();
                tower::ServiceExt::oneshot(router, req).await.unwrap().status()
            }
        };
        let (sa, sb) = tokio::join!(run(&a, ta.clone()), run(&b, tb));
        assert!(sa.is_success() && sb.is_success());
        // Wait until every instance is decided.
        let mut states = Vec::new();
        for _ in 0..200 {
            let (_, page) = a.get("/v1/instances?limit=100", &ta).await;
            states =
                page["items"].as_array().unwrap().iter().map(|i| i["state"].as_str().unwrap().to_owned()).collect();
            if states.len() == 20 && states.iter().all(|s| s != "pending") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let placed = states.iter().filter(|s| *s == "building").count();
        let failed = states.iter().filter(|s| *s == "error").count();
        assert_eq!((placed, failed), (8, 12), "{backend}: {states:?}");
        let (_, host) = a.get("/v1/hosts/host-a", &a.admin).await;
        assert_eq!(host["used_memory_mib"], 4096, "{backend}: {host}");
        assert_eq!(host["used_vcpus"], 8, "{backend}: {host}");
    }
}
