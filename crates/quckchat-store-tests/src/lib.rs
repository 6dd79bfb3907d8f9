//! The store conformance suite: what every QuckChat store backend must do, written once
//! against the store ports, [`Store`](quckchat_domain::store::Store) and
//! [`CallStore`](quckchat_domain::store::CallStore).
//!
//! Each case is a plain `pub async fn case(store: DynStore)` that panics when the
//! backend breaks the contract, and expects a fresh, empty store. [`DynStore`] is an
//! `Arc<dyn Backend>`, and [`Backend`] is implemented for every type that implements
//! both ports, so cases reach chat storage and call storage through the one handle.
//! A backend runs every case, each as its own test, with one line in its integration
//! tests:
//!
//! ```ignore
//! quckchat_store_tests::conformance_suite!(async { fresh_store().await });
//! ```
//!
//! The expression is evaluated once per case and awaited; its output must coerce to a
//! [`DynStore`] (an `Arc<MyStore>` does when `MyStore` implements both `Store` and
//! `CallStore`). Attributes written before it are put on every generated test, so a
//! backend that needs a server can be skipped by default:
//!
//! ```ignore
//! quckchat_store_tests::conformance_suite!(
//!     #[ignore = "needs PostgreSQL (set DATABASE_URL)"]
//!     async { fresh_pg_store().await }
//! );
//! ```
//!
//! The generated tests are named `<module>::<case>` (for example
//! `messages::concurrent_appends_are_gap_free`) and run on a multi-threaded tokio runtime
//! with two workers, so that the concurrency cases race for real. The calling crate needs
//! `tokio` (with the `macros` and `rt-multi-thread` features) among its dev-dependencies.

pub mod calls;
pub mod conversations;
pub mod messages;
pub mod pushes;
pub mod receipts_reactions;
pub mod sessions;
pub mod support;
pub mod users;

pub use support::{Backend, DynStore};

/// Expands to one `#[tokio::test]` per conformance case; see the [crate docs](crate).
#[macro_export]
macro_rules! conformance_suite {
    // Collect leading attributes one by one, so that they never compete with the
    // expression (which may itself begin with `#`) for the same tokens.
    (@attrs [$($attrs:tt)*] #[$attr:meta] $($rest:tt)*) => {
        $crate::conformance_suite!(@attrs [$($attrs)* #[$attr]] $($rest)*);
    };
    (@attrs $attrs:tt $make:expr $(,)?) => {
        $crate::__conformance_module!(users $attrs $make; [
            create_and_fetch,
            duplicate_username_conflicts_case_insensitively,
            credentials_by_username_case_insensitive,
            users_skip_unknown_ids,
            update_profile_patches_only_given_fields,
            search_by_username_or_display_name,
            set_last_seen_round_trips,
            timestamps_round_trip_exactly,
        ]);
        $crate::__conformance_module!(sessions $attrs $make; [
            create_and_fetch,
            rotate_refresh_token_once,
            rotate_fails_on_revoked_session,
            revoke_once,
        ]);
        $crate::__conformance_module!(conversations $attrs $make; [
            create_group_with_roles,
            single_between_either_order,
            second_single_for_pair_conflicts,
            concurrent_single_creates_one_wins,
            conversations_of_by_activity,
            conversation_ids_of_lists_memberships,
            co_members_of_are_distinct,
            member_role_of_members_only,
            update_conversation_changes_given_fields,
            add_members_returns_only_added,
            remove_member_once,
            last_admin_leaving_promotes_the_next_member,
            concurrent_leaves_keep_an_admin,
            unread_count_counts_others_unread_messages,
        ]);
        $crate::__conformance_module!(messages $attrs $make; [
            append_assigns_consecutive_seqs,
            append_updates_pointer_and_conversation,
            append_to_unknown_conversation_not_found,
            append_by_non_member_is_refused,
            concurrent_appends_are_gap_free,
            concurrent_appends_keep_separate_sequences,
            client_message_id_is_idempotent,
            client_message_id_is_per_sender,
            concurrent_duplicates_create_once,
            history_pages,
            edit_sets_content_and_edited_at,
            delete_empties_and_keeps_seq,
            attachments_and_reply_round_trip,
        ]);
        $crate::__conformance_module!(receipts_reactions $attrs $make; [
            mark_read_moves_up_only,
            read_by_is_first_time_reached,
            reactions_add_and_remove,
        ]);
        $crate::__conformance_module!(pushes $attrs $make; [
            append_message_stores_push_jobs,
            claim_leases_due_jobs_oldest_first,
            delivered_jobs_are_not_claimed,
            failed_jobs_retry_then_give_up,
            pushes_for_lists_user_jobs_oldest_first,
            enqueue_standalone_call_jobs,
        ]);
        $crate::__conformance_module!(calls $attrs $make; [
            create_and_fetch,
            unknown_call_is_none,
            save_with_current_version,
            save_with_stale_version_changes_nothing,
            concurrent_saves_one_wins,
            calls_of_conversation_newest_first,
            live_calls_of_user,
            live_calls_are_ringing_or_active,
        ]);
    };
    ($($input:tt)*) => {
        $crate::conformance_suite!(@attrs [] $($input)*);
    };
}

/// One module of generated tests; an implementation detail of [`conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_module {
    ($module:ident $attrs:tt $make:expr; [$($case:ident),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $( $crate::__conformance_case!($module $case $attrs $make); )*
        }
    };
}

/// One generated test; an implementation detail of [`conformance_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case {
    ($module:ident $case:ident [$($attrs:tt)*] $make:expr) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attrs)*
        async fn $case() {
            let store: $crate::DynStore = ($make).await;
            $crate::$module::$case(store).await;
        }
    };
}
