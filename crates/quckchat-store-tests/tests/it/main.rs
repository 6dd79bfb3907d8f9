//! Checks that `conformance_suite!` expands the way backends use it, attributes
//! included. There is no backend in this crate, so every generated case is ignored;
//! the backend crates run them for real.

use quckchat_store_tests::DynStore;

async fn no_store() -> DynStore {
    unreachable!("every case here is ignored")
}

quckchat_store_tests::conformance_suite!(
    #[ignore = "no backend in this crate: this only checks that attributes pass through"]
    #[allow(unreachable_code)]
    async {
        no_store().await
    }
);
