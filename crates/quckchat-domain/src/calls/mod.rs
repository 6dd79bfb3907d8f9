//! Calls: the server owns each call's state. Clients ask (`initiate`, `answer`, `reject`,
//! `end`, relay a signal); the service checks who may, applies the pure state machine
//! ([`machine`]) under the call's lane, saves the call, and delivers the effects.
//! Signals for a participant who has not joined yet wait (bounded) and are delivered
//! when it joins. A ring timer per call makes unanswered calls `missed`.

pub mod devices;
pub mod machine;
pub mod signals;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::instrument;

use crate::call_model::{Call, CallKind, CallParticipant, CallStatus, ParticipantStatus};
use crate::chat::{Chat, CreateConversation};
use crate::error::DomainError;
use crate::events::{EndReason, ServerEvent, SignalKind, SignalPayload};
use crate::hot::Changed;
use crate::ids::{CallId, ConversationId, UserId};
use crate::lanes::Lanes;
use crate::model::{ConversationKind, PushJob, PushKind, Timestamp, now};
use crate::presence::PresenceRegistry;
use crate::realtime::{Audience, Device, Realtime};
use crate::store::CallStore;
use crate::store::Store;
use devices::DeviceDirectory;
use machine::Effect;
use signals::{PendingSignal, SignalBuffer};

/// Whether a (possibly stale) copy of a call is enough to relay a signal: the sender's
/// device and every target are joined and the call is live. Anything else is decided on
/// the stored call.
fn relay_ready(call: &Call, from: &Device, to: Option<UserId>) -> bool {
    let joined = |p: &CallParticipant| p.status == ParticipantStatus::Joined && p.device.is_some();
    let sender_ok =
        call.participant(from.user).is_some_and(|p| joined(p) && p.device.as_deref() == Some(from.id.0.as_str()));
    let targets_ok = match to {
        Some(user) => call.participant(user).is_some_and(joined),
        None => call.participants.iter().filter(|p| p.user_id != from.user).all(joined),
    };
    sender_ok && targets_ok && call.status.is_live()
}

/// Result of the calls service.
pub type CallResult<T> = Result<T, DomainError>;

/// The most signals kept for one participant who has not joined yet.
pub const MAX_PENDING_SIGNALS: usize = 128;

/// Whom to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallTarget {
    /// One user: their single conversation with the caller is found or made.
    User(UserId),
    /// Everyone else in a conversation.
    Conversation(ConversationId),
}

/// How `initiate` went for the caller.
#[derive(Debug, Clone)]
pub struct Initiated {
    /// The call (its status says `ringing`, `busy`, or `active` after glare).
    pub call: Call,
    /// `true` when the caller's request met the callee's own ringing call to it (glare):
    /// the caller has joined that call as a callee and should wait for an offer.
    pub joined_existing: bool,
}

/// The calls service.
pub struct Calls {
    store: Arc<dyn Store>,
    calls: Arc<dyn CallStore>,
    chat: Arc<Chat>,
    realtime: Arc<dyn Realtime>,
    /// Counts `/webrtc` sockets per user: a callee with none gets a push.
    devices: Arc<dyn PresenceRegistry>,
    /// Which devices are alive, to free calls whose device vanished with its instance.
    directory: Arc<dyn DeviceDirectory>,
    /// One lane per call: transitions of a call happen one at a time.
    lanes: Lanes<CallId>,
    /// One lane per conversation for `initiate`, so that two users calling each other
    /// at once meet in one call.
    placing: Lanes<ConversationId>,
    /// One call placement per caller at a time, so "one outgoing ringing call per user"
    /// holds under concurrent `call:initiate`s in different conversations.
    placing_by_caller: Lanes<UserId>,
    pending: Arc<dyn SignalBuffer>,
    ring_timeout: Duration,
    push_queued: Arc<Notify>,
}

impl Calls {
    /// Wires the service.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        calls: Arc<dyn CallStore>,
        chat: Arc<Chat>,
        realtime: Arc<dyn Realtime>,
        devices: Arc<dyn PresenceRegistry>,
        directory: Arc<dyn DeviceDirectory>,
        pending: Arc<dyn SignalBuffer>,
        ring_timeout: Duration,
        push_queued: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            calls,
            chat,
            realtime,
            devices,
            directory,
            lanes: Lanes::new(),
            placing: Lanes::new(),
            placing_by_caller: Lanes::new(),
            pending,
            ring_timeout,
            push_queued,
        })
    }

    /// The call store.
    pub fn store(&self) -> &Arc<dyn CallStore> {
        &self.calls
    }

    /// Places a call. Every socket of every callee rings (`call:incoming`); callees with
    /// no `/webrtc` socket get a push; a one-to-one callee already in an active call makes
    /// it `busy`. If the callee is at that moment ringing the caller, the caller joins
    /// that call instead (glare).
    #[instrument(skip_all, fields(caller = %caller.user))]
    pub async fn initiate(
        self: &Arc<Self>,
        caller: &Device,
        target: CallTarget,
        kind: CallKind,
    ) -> CallResult<Initiated> {
        let conversation = match target {
            CallTarget::User(callee) => {
                if callee == caller.user {
                    return Err(DomainError::InvalidInput("you cannot call yourself".into()));
                }
                let cmd = CreateConversation { kind: ConversationKind::Single, participants: vec![callee], name: None };
                self.chat.create_conversation(caller.user, cmd).await?.conversation
            }
            CallTarget::Conversation(id) => self.chat.conversation(caller.user, id).await.map_err(|e| match e {
                DomainError::NotFound(_) => DomainError::Forbidden("not a member of this conversation"),
                other => other,
            })?,
        };
        let callees: Vec<UserId> = conversation.others(caller.user).collect();
        if callees.is_empty() {
            return Err(DomainError::InvalidInput("nobody else is in this conversation".into()));
        }

        let _caller_turn = self.placing_by_caller.enter(caller.user).await;
        let _placing = self.placing.enter(conversation.id).await;
        let caller_live = self.calls.live_calls_of(caller.user).await?;
        if let Some(existing) = caller_live.iter().find(|c| c.conversation_id == conversation.id) {
            let me = existing.participant(caller.user).map(|p| p.status);
            if existing.initiator_id != caller.user && me == Some(ParticipantStatus::Ringing) {
                // Glare: they are calling us right now. Join their call.
                let call = self.answer(caller, existing.id).await?;
                return Ok(Initiated { call, joined_existing: true });
            }
            if existing.initiator_id == caller.user {
                return Ok(Initiated { call: existing.clone(), joined_existing: false });
            }
        }
        if caller_live.iter().any(|c| {
            c.status == CallStatus::Active
                && c.participant(caller.user).is_some_and(|p| p.status == ParticipantStatus::Joined)
        }) {
            return Err(DomainError::Conflict("you are already in a call".into()));
        }
        // One outgoing ringing call per user: a second one (in another conversation) would
        // ring two sets of devices for one person who can only talk in one.
        if caller_live.iter().any(|c| c.status == CallStatus::Ringing && c.initiator_id == caller.user) {
            return Err(DomainError::Conflict("you already have a call ringing; end it first".into()));
        }

        let at = now();
        let mut busy = Vec::new();
        for callee in &callees {
            let live = self.calls.live_calls_of(*callee).await?;
            if live.iter().any(|c| {
                c.status == CallStatus::Active
                    && c.participant(*callee).is_some_and(|p| p.status == ParticipantStatus::Joined)
            }) {
                busy.push(*callee);
            }
        }
        let mut participants = vec![CallParticipant {
            user_id: caller.user,
            status: ParticipantStatus::Joined,
            joined_at: Some(at),
            left_at: None,
            device: Some(caller.id.0.clone()),
        }];
        participants.extend(callees.iter().map(|u| {
            let is_busy = busy.contains(u);
            CallParticipant {
                user_id: *u,
                status: if is_busy { ParticipantStatus::Missed } else { ParticipantStatus::Ringing },
                joined_at: None,
                left_at: is_busy.then_some(at),
                device: None,
            }
        }));
        let all_busy = busy.len() == callees.len();
        let call = Call {
            id: CallId::new(),
            conversation_id: conversation.id,
            initiator_id: caller.user,
            kind,
            status: if all_busy { CallStatus::Busy } else { CallStatus::Ringing },
            participants,
            created_at: at,
            started_at: None,
            ended_at: all_busy.then_some(at),
            duration_sec: None,
            version: 0,
        };
        let epoch = self.chat.hot().epoch();
        self.calls.create_call(&call).await?;
        self.chat.hot().fill_call(epoch, &call);
        if all_busy {
            self.realtime
                .publish(
                    Audience::User(caller.user),
                    ServerEvent::CallEnded { call_id: call.id, reason: EndReason::Busy, ended_by: None },
                )
                .await;
            return Ok(Initiated { call, joined_existing: false });
        }

        let ringing: Vec<UserId> = callees.iter().copied().filter(|u| !busy.contains(u)).collect();
        let caller_name = self.chat.display_name(caller.user).await?.to_string();
        self.realtime
            .publish(
                Audience::Users(ringing.clone()),
                ServerEvent::CallIncoming {
                    call_id: call.id,
                    caller_id: caller.user,
                    caller_name: caller_name.clone(),
                    kind,
                    conversation_id: conversation.id,
                },
            )
            .await;
        let online = self.devices.online_among(&ringing).await?;
        let pushes: Vec<PushJob> = ringing
            .iter()
            .filter(|u| !online.contains(u))
            .map(|u| {
                PushJob::new(
                    *u,
                    PushKind::Call,
                    conversation.id,
                    None,
                    Some(call.id.to_string()),
                    caller.user,
                    caller_name.clone(),
                    format!("Incoming {} call", kind.as_str()),
                    at,
                )
            })
            .collect();
        if !pushes.is_empty() {
            self.store.enqueue_pushes(pushes).await?;
            self.push_queued.notify_one();
        }
        self.arm_ring_timer(call.id);
        Ok(Initiated { call, joined_existing: false })
    }

    fn arm_ring_timer(self: &Arc<Self>, id: CallId) {
        let this = Arc::downgrade(self);
        let after = self.ring_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(calls) = this.upgrade()
                && let Err(e) = calls.transition(id, |call, at| Ok(machine::ring_timeout(call, at))).await
            {
                tracing::warn!(call = %id, error = %e, "ring timeout could not be applied");
            }
        });
    }

    /// Loads a call, applies a transition under its lane, saves it (retrying on a
    /// concurrent save elsewhere) and delivers the effects.
    async fn transition(
        &self,
        id: CallId,
        apply: impl Fn(&mut Call, Timestamp) -> Result<Vec<Effect>, DomainError>,
    ) -> CallResult<Call> {
        let _lane = self.lanes.enter(id).await;
        for _ in 0..5 {
            let mut call = self.calls.call(id).await?.ok_or(DomainError::NotFound("call"))?;
            let before = call.clone();
            let effects = apply(&mut call, now())?;
            if call == before {
                self.deliver(&call, effects).await;
                return Ok(call);
            }
            let expected = call.version;
            call.version += 1;
            let epoch = self.chat.hot().epoch();
            if self.calls.save_call(&call, expected).await? {
                // This instance knows the new state; the others forget theirs before the
                // effects (call:accepted and the like) go out.
                self.chat.hot().fill_call(epoch, &call);
                self.chat.announce(Changed::Call(id)).await;
                self.deliver(&call, effects).await;
                return Ok(call);
            }
        }
        Err(DomainError::Conflict("the call is changing too fast; try again".into()))
    }

    async fn deliver(&self, call: &Call, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(to, event) => self.realtime.publish(to, event).await,
                Effect::FlushPending(user, device) => {
                    let queued = self.pending.take(call.id, user).await.unwrap_or_else(|e| {
                        tracing::warn!(call = %call.id, error = %e, "could not take the signals waiting for a participant");
                        Vec::new()
                    });
                    for s in queued {
                        self.realtime
                            .publish(
                                Audience::Device(device.clone()),
                                ServerEvent::Signal {
                                    kind: s.kind,
                                    call_id: call.id,
                                    from: s.from,
                                    payload: s.payload,
                                },
                            )
                            .await;
                    }
                }
                Effect::ClearPending => {
                    if let Err(e) = self.pending.clear(call.id, &call.member_ids()).await {
                        tracing::warn!(call = %call.id, error = %e, "could not clear a call's waiting signals");
                    }
                }
            }
        }
    }

    /// A participant's call, or `NotFound` / `Forbidden`.
    pub async fn call_for(&self, user: UserId, id: CallId) -> CallResult<Call> {
        let call = self.calls.call(id).await?.ok_or(DomainError::NotFound("call"))?;
        if call.participant(user).is_none() {
            return Err(DomainError::Forbidden("not a participant of this call"));
        }
        Ok(call)
    }

    /// A conversation's calls, for a member.
    pub async fn history(
        &self,
        user: UserId,
        conversation: ConversationId,
        before: Option<Timestamp>,
        limit: u32,
    ) -> CallResult<Vec<Call>> {
        self.chat.conversation(user, conversation).await?;
        Ok(self.calls.calls_of_conversation(conversation, before, limit.clamp(1, 200)).await?)
    }

    /// A device answers.
    #[instrument(skip_all, fields(user = %who.user, call = %id))]
    pub async fn answer(&self, who: &Device, id: CallId) -> CallResult<Call> {
        self.transition(id, |call, at| machine::answer(call, who.user, &who.id, at)).await
    }

    /// A callee refuses.
    #[instrument(skip_all, fields(user = %who, call = %id))]
    pub async fn reject(&self, who: UserId, id: CallId) -> CallResult<Call> {
        self.transition(id, |call, at| machine::reject(call, who, at)).await
    }

    /// A participant hangs up.
    #[instrument(skip_all, fields(user = %who, call = %id))]
    pub async fn end(&self, who: UserId, id: CallId) -> CallResult<Call> {
        self.transition(id, |call, at| machine::hang_up(call, who, None, at)).await
    }

    /// Relays an offer, answer or ICE candidate from a joined device to the other joined
    /// participants (or only to `to`). For a participant still ringing, it waits until
    /// that participant joins.
    #[instrument(skip_all, fields(user = %from.user, call = %id, kind = kind.event()))]
    pub async fn relay(
        &self,
        from: &Device,
        id: CallId,
        kind: SignalKind,
        payload: SignalPayload,
        to: Option<UserId>,
    ) -> CallResult<()> {
        // Every relayed signal checks the call: from memory when it shows the sender's
        // device and every target joined (the steady state of a call), else from the store,
        // so a state another instance has just changed (a callee who just joined there) is
        // never decided on from a stale copy.
        let call = match self.chat.hot().call(id).filter(|c| relay_ready(c, from, to)) {
            Some(call) => call,
            None => {
                let epoch = self.chat.hot().epoch();
                let call = self.calls.call(id).await?.ok_or(DomainError::NotFound("call"))?;
                self.chat.hot().fill_call(epoch, &call)
            }
        };
        let sender = call.participant(from.user).ok_or(DomainError::Forbidden("not a participant of this call"))?;
        if sender.status != ParticipantStatus::Joined || sender.device.as_deref() != Some(from.id.0.as_str()) {
            return Err(DomainError::Forbidden("only a joined device may signal in this call"));
        }
        if !call.status.is_live() {
            return Err(DomainError::Conflict("the call is over".into()));
        }
        let targets: Vec<&CallParticipant> = match to {
            Some(user) if user == from.user => return Err(DomainError::InvalidInput("`to` is yourself".into())),
            Some(user) => vec![call.participant(user).ok_or(DomainError::NotFound("participant"))?],
            None => call.participants.iter().filter(|p| p.user_id != from.user).collect(),
        };
        for target in targets {
            match (target.status, &target.device) {
                (ParticipantStatus::Joined, Some(device)) => {
                    self.realtime
                        .publish(
                            Audience::Device(crate::realtime::DeviceId(device.clone())),
                            ServerEvent::Signal { kind, call_id: id, from: from.user, payload: payload.clone() },
                        )
                        .await;
                }
                (ParticipantStatus::Ringing, _) => {
                    let signal = PendingSignal { kind, from: from.user, payload: payload.clone() };
                    if !self.pending.push(id, target.user_id, signal, MAX_PENDING_SIGNALS).await? {
                        return Err(DomainError::RateLimited);
                    }
                }
                _ if to.is_some() => return Err(DomainError::Conflict("that participant is not in the call".into())),
                _ => {}
            }
        }
        Ok(())
    }

    /// Tells the other joined participants that a participant muted or unmuted.
    pub async fn mute(&self, who: &Device, id: CallId, video: bool, muted: bool) -> CallResult<()> {
        let call = self.calls.call(id).await?.ok_or(DomainError::NotFound("call"))?;
        let me = call.participant(who.user).ok_or(DomainError::Forbidden("not a participant of this call"))?;
        if me.status != ParticipantStatus::Joined {
            return Err(DomainError::Forbidden("only a joined participant may do this"));
        }
        let others: Vec<UserId> = call.joined().map(|p| p.user_id).filter(|u| *u != who.user).collect();
        self.realtime
            .publish(
                Audience::Users(others),
                ServerEvent::ParticipantMuted {
                    call_id: id,
                    user_id: who.user,
                    kind: if video { "video" } else { "audio" },
                    muted,
                },
            )
            .await;
        Ok(())
    }

    /// A `/webrtc` socket connected.
    pub async fn device_connected(&self, device: &Device) -> CallResult<()> {
        self.directory.register(device).await?;
        if let Err(e) = self.devices.socket_connected(device.user).await {
            let _ = self.directory.unregister(device).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// A `/webrtc` socket went away: if it carried a participant's media, that
    /// participant leaves the call.
    pub async fn device_gone(&self, device: &Device) {
        if let Err(e) = self.directory.unregister(device).await {
            tracing::warn!(user = %device.user, error = %e, "could not forget a call device");
        }
        if let Err(e) = self.devices.socket_disconnected(device.user).await {
            tracing::warn!(user = %device.user, error = %e, "could not count a call device leaving");
        }
        let live = match self.calls.live_calls_of(device.user).await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(user = %device.user, error = %e, "could not find the calls of a leaving device");
                return;
            }
        };
        for call in live {
            let joined_here = call.participant(device.user).is_some_and(|p| {
                p.status == ParticipantStatus::Joined && p.device.as_deref() == Some(device.id.0.as_str())
            });
            if joined_here
                && let Err(e) =
                    self.transition(call.id, |c, at| machine::hang_up(c, device.user, Some(&device.id), at)).await
            {
                tracing::warn!(call = %call.id, error = %e, "could not remove a dropped device from its call");
            }
        }
    }

    /// Settles calls left ringing or active by a previous run (nobody is connected to a
    /// server that just started). Returns how many it settled.
    pub async fn settle_after_restart(&self) -> CallResult<usize> {
        let live = self.calls.live_calls().await?;
        let mut settled = 0;
        for call in live {
            let at = now();
            let id = call.id;
            if self
                .transition(id, |c, _| {
                    machine::settle_after_restart(c, at);
                    Ok(Vec::new())
                })
                .await
                .is_ok()
            {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Applies the ring timeout to every call whose callees have rung too long, and takes
    /// out of their calls participants whose device is gone. The ring timer and the
    /// disconnect path of the instance involved normally do this; the sweep covers what an
    /// instance that died left behind. Saves are versioned, so however many instances
    /// sweep, each change happens once and its events go out once.
    pub async fn sweep(&self) -> CallResult<usize> {
        let cutoff = now() - chrono::Duration::from_std(self.ring_timeout).unwrap_or(chrono::Duration::seconds(45));
        let mut changed = 0;
        for call in self.calls.live_calls().await? {
            let ringing = call.participants.iter().any(|p| p.status == ParticipantStatus::Ringing);
            if ringing && call.created_at <= cutoff {
                self.transition(call.id, |c, at| Ok(machine::ring_timeout(c, at))).await?;
                changed += 1;
            }
            // A joined device that is gone without a goodbye (its instance died) leaves.
            for p in call.joined() {
                let Some(device) = p.device.clone().map(crate::realtime::DeviceId) else { continue };
                if !self.directory.is_live(&device).await? {
                    let user = p.user_id;
                    self.transition(call.id, |c, at| machine::hang_up(c, user, Some(&device), at)).await?;
                    changed += 1;
                }
            }
        }
        Ok(changed)
    }

    /// Sweeps every `every` until `stop` resolves.
    pub async fn sweep_every(self: Arc<Self>, every: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {
                    if let Err(e) = self.sweep().await {
                        tracing::warn!(error = %e, "call sweep failed");
                    }
                }
                _ = &mut stop => break,
            }
        }
    }

    /// How many signals wait for participants who have not joined (metrics, tests).
    pub async fn pending_signals(&self) -> usize {
        self.pending.waiting().await.unwrap_or(0)
    }
}
