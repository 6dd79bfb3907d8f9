//! B1–B7. Each scenario runs against one started server and returns its metrics as an
//! ordered list of (name, value); the report puts the servers side by side.

use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::conn::{self, AckKind, Conn, Dial, Pending};
use crate::ctx::{Ctx, PhaseReport};
use crate::procfs;
use crate::servers::{Fixture, Kind, Server};

/// How big each scenario is (full or smoke).
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub pairs: usize,
    pub groups: Vec<usize>,
    pub b1_steps: Vec<usize>,
    pub connect_concurrency: usize,
    pub avalanche_concurrency: usize,
    pub source_addrs: u8,
    pub fanout_deliveries_per_sec: f64,
    pub fixed_secs: f64,
    pub ramp_step_secs: f64,
    pub ramp_steps: usize,
    pub burst_deliveries: usize,
    pub burst_max_msgs: usize,
    pub b4_users: usize,
    pub b4_senders: usize,
    pub b4_secs: f64,
    /// B4b's offered rate (open loop), messages/s over all of B4's users.
    pub b4b_rate: f64,
    pub b5_users: usize,
    pub b5_rate_per_user: f64,
    pub b5_secs: f64,
    pub b6_pairs: usize,
    pub b6_rate_per_side: f64,
    pub b6_secs: f64,
    pub b7_group: usize,
    pub b7_rate: f64,
    pub b7_secs: f64,
    pub b7_slow_rcvbuf: u32,
    pub b7_pad: usize,
    pub drain_secs: f64,
}

impl Params {
    pub fn full() -> Self {
        Params {
            pairs: 7500,
            groups: vec![10, 100, 1000],
            b1_steps: vec![5000, 10000, 15000],
            connect_concurrency: 200,
            avalanche_concurrency: 1000,
            source_addrs: 64,
            fanout_deliveries_per_sec: 20_000.0,
            fixed_secs: 4.0,
            ramp_step_secs: 2.5,
            ramp_steps: 4,
            burst_deliveries: 200_000,
            burst_max_msgs: 2000,
            b4_users: 2000,
            b4_senders: 400,
            b4_secs: 8.0,
            b4b_rate: 10_000.0,
            b5_users: 2000,
            b5_rate_per_user: 0.5,
            b5_secs: 12.0,
            b6_pairs: 200,
            b6_rate_per_side: 10.0,
            b6_secs: 8.0,
            b7_group: 1,
            b7_rate: 200.0,
            b7_secs: 15.0,
            b7_slow_rcvbuf: 8192,
            b7_pad: 4000,
            drain_secs: 5.0,
        }
    }

    pub fn smoke() -> Self {
        Params {
            pairs: 20,
            groups: vec![3, 5, 8],
            b1_steps: vec![10, 20, 40],
            connect_concurrency: 8,
            avalanche_concurrency: 16,
            source_addrs: 4,
            fanout_deliveries_per_sec: 200.0,
            fixed_secs: 1.0,
            ramp_step_secs: 0.5,
            ramp_steps: 1,
            burst_deliveries: 200,
            burst_max_msgs: 50,
            b4_users: 10,
            b4_senders: 10,
            b4_secs: 1.0,
            b4b_rate: 50.0,
            b5_users: 10,
            b5_rate_per_user: 2.0,
            b5_secs: 1.0,
            b6_pairs: 2,
            b6_rate_per_side: 5.0,
            b6_secs: 1.0,
            b7_group: 2,
            b7_rate: 10.0,
            b7_secs: 1.0,
            b7_slow_rcvbuf: 8192,
            b7_pad: 100,
            drain_secs: 2.0,
        }
    }
}

/// One server's result in one scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub metrics: Vec<(String, f64)>,
    pub notes: Vec<String>,
    pub detail: serde_json::Map<String, Value>,
}

impl Outcome {
    fn m(&mut self, name: impl Into<String>, v: f64) {
        self.metrics.push((name.into(), v));
    }
    fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }
    fn d(&mut self, k: &str, v: impl Serialize) {
        self.detail.insert(k.into(), serde_json::to_value(v).unwrap_or(Value::Null));
    }
}

/// CPU of the server and of this generator over a window.
struct Window {
    t: Instant,
    srv: f64,
    gen_cpu: f64,
}

impl Window {
    fn start(s: &Server) -> Self {
        Window { t: Instant::now(), srv: s.cpu(), gen_cpu: procfs::self_cpu_secs() }
    }
    /// (seconds, server CPU seconds, generator share of a core)
    fn end(&self, s: &Server) -> (f64, f64, f64) {
        let secs = self.t.elapsed().as_secs_f64().max(1e-6);
        // Below a second the 10 ms tick of /proc makes the share meaningless.
        let gen_share = if secs < 1.0 { 0.0 } else { (procfs::self_cpu_secs() - self.gen_cpu) / secs };
        (secs, s.cpu() - self.srv, gen_share)
    }
}

pub struct Bench {
    pub ctx: Rc<Ctx>,
    pub fx: Rc<Fixture>,
    pub p: Params,
    cmid: std::cell::Cell<u64>,
    nonce: u64,
}

const SATURATED: f64 = 0.90;

impl Bench {
    pub fn new(fx: Rc<Fixture>, p: Params) -> Self {
        let conv_index = fx.conversations.iter().enumerate().map(|(i, c)| (c.id.clone(), i as u32)).collect();
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Bench { ctx: Ctx::new(conv_index), fx, p, cmid: std::cell::Cell::new(0), nonce }
    }

    fn src(&self, user: u32) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, 2 + (user % self.p.source_addrs as u32) as u8)
    }

    /// Connects `users` with at most `concurrency` handshakes in flight. Returns the
    /// connections, the failures (with one example) and the seconds it took.
    async fn connect(
        &self,
        s: &Server,
        users: &[u32],
        nsp: &'static str,
        concurrency: usize,
        rcvbuf: impl Fn(u32) -> Option<u32>,
    ) -> (Vec<Rc<Conn>>, usize, Option<String>, f64) {
        let t = Instant::now();
        let results: Vec<Result<Rc<Conn>, String>> = futures_util::stream::iter(users.iter().copied())
            .map(|u| {
                let dial = Dial {
                    server: s.addr,
                    src: self.src(u),
                    nsp,
                    token: self.fx.users[u as usize].token.clone(),
                    user: u,
                    rcvbuf: rcvbuf(u),
                    timeout: Duration::from_secs(30),
                };
                conn::connect(&self.ctx, dial)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let secs = t.elapsed().as_secs_f64();
        let mut ok = Vec::with_capacity(results.len());
        let mut failed = 0;
        let mut example = None;
        for r in results {
            match r {
                Ok(c) => ok.push(c),
                Err(e) => {
                    failed += 1;
                    example.get_or_insert(e);
                }
            }
        }
        (ok, failed, example, secs)
    }

    fn next_cmid(&self) -> String {
        let n = self.cmid.get() + 1;
        self.cmid.set(n);
        format!("b{}-{n}", self.nonce)
    }

    /// Emits `message:send` with the send time in its content.
    fn send_message(&self, c: &Rc<Conn>, conv: usize, members: u32, pad: &str) {
        let id = c.next_ack();
        let now = self.ctx.now_us();
        let tag = self.ctx.tag();
        let body = format!(
            "2/chat,{id}[\"message:send\",{{\"conversationId\":\"{}\",\"content\":\"~B{tag}~{now}~{pad}\",\"clientMessageId\":\"{}\"}}]",
            self.fx.conversations[conv].id,
            self.next_cmid()
        );
        self.ctx.phase.borrow_mut().sent += 1;
        c.emit_raw(&self.ctx, &body, Some((id, Pending { sent_us: now, kind: AckKind::Message { members }, tag })));
    }

    fn send_typing(&self, c: &Rc<Conn>, conv: usize) {
        let id = c.next_ack();
        let body =
            format!("2/chat,{id}[\"user:typing\",{{\"conversationId\":\"{}\"}}]", self.fx.conversations[conv].id);
        c.emit_raw(
            &self.ctx,
            &body,
            Some((id, Pending { sent_us: self.ctx.now_us(), kind: AckKind::Plain, tag: self.ctx.tag() })),
        );
    }

    /// Waits until every owed delivery and ack arrived, or nothing arrived for `idle`,
    /// or `max` passed.
    async fn drain(&self, conns: &[Rc<Conn>], max: f64) {
        let t = Instant::now();
        let mut last = (0u64, 0u64);
        let mut still = Instant::now();
        while t.elapsed().as_secs_f64() < max {
            let (delivered, expected) = {
                let ph = self.ctx.phase.borrow();
                (ph.delivered, ph.expected)
            };
            let outstanding = Ctx::outstanding(conns);
            if outstanding == 0 && delivered >= expected {
                return;
            }
            if (delivered, outstanding) != last {
                last = (delivered, outstanding);
                still = Instant::now();
            } else if still.elapsed() > Duration::from_millis(1500) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn close_phase(&self, conns: &[Rc<Conn>]) -> PhaseReport {
        let outstanding = Ctx::outstanding(conns);
        for c in conns {
            c.pending.borrow_mut().clear();
        }
        self.ctx.new_phase().report(outstanding)
    }

    /// Connections the server closed (or that broke) since `since`, and QuckChat's own
    /// count of emits that failed because a socket's buffer was full.
    async fn server_side_losses(&self, o: &mut Outcome, s: &Server, since: u64) {
        o.m("connections closed by the server", (self.ctx.disconnects.get() - since) as f64);
        if s.kind == Kind::Quck {
            let failures = match reqwest::get(format!("{}/metrics", s.base())).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
            .lines()
            .filter(|l| l.starts_with("quckchat_broadcast_failures_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b);
            o.m("emits refused, socket buffer full (server metric)", failures);
        }
    }

    fn record_phase(o: &mut Outcome, prefix: &str, r: &PhaseReport) {
        o.m(format!("{prefix}lost deliveries"), r.lost as f64);
        o.m(format!("{prefix}seq gaps seen"), r.gaps as f64);
        o.m(format!("{prefix}duplicates"), r.dups as f64);
        let errs: u64 = r.ack_errors.values().sum::<u64>() + r.no_ack;
        o.m(format!("{prefix}failed or missing acks"), errs as f64);
    }

    // -----------------------------------------------------------------------------------
    // B1 idle memory + B2 connect storm and reconnect avalanche
    // -----------------------------------------------------------------------------------
    pub async fn b1_b2(&self, s: &Server) -> (Outcome, Outcome) {
        let mut b1 = Outcome::default();
        let mut b2 = Outcome::default();
        let disc0 = self.ctx.disconnects.get();
        s.quiet(Duration::from_secs(5)).await;
        s.gc().await;
        let (base_rss, _) = s.rss();
        b1.m("RSS at start, MiB", base_rss as f64 / 1024.0);
        let users: Vec<u32> = (0..(self.fx.pairs * 2).min(*self.p.b1_steps.last().unwrap_or(&0)) as u32).collect();
        let mut conns: Vec<Rc<Conn>> = Vec::new();
        let mut connect_secs = 0.0;
        let mut connect_cpu = 0.0;
        let mut gen_max: f64 = 0.0;
        let mut failures = 0;
        let mut done = 0usize;
        for &step in &self.p.b1_steps {
            let step = step.min(users.len());
            if step <= done {
                continue;
            }
            let w = Window::start(s);
            let (mut got, failed, example, secs) =
                self.connect(s, &users[done..step], "/chat", self.p.connect_concurrency, |_| None).await;
            let (_, cpu, gen_cpu) = w.end(s);
            gen_max = gen_max.max(gen_cpu);
            connect_secs += secs;
            connect_cpu += cpu;
            failures += failed;
            if let Some(e) = example {
                b1.note(format!("{failed} connects failed at {step} (e.g. {e})"));
            }
            conns.append(&mut got);
            done = step;
            s.quiet(Duration::from_secs(10)).await;
            s.gc().await;
            let (rss, _) = s.rss();
            let n = conns.len().max(1) as f64;
            b1.m(format!("RSS at {step} conns, MiB"), rss as f64 / 1024.0);
            b1.m(format!("KiB per conn at {step}"), (rss as f64 - base_rss as f64) / n);
        }
        let (_, hwm) = s.rss();
        b1.m("peak RSS (VmHWM), MiB", hwm as f64 / 1024.0);
        b1.m("server fds", procfs::fd_count(s.pid) as f64);
        b1.m("connect failures", failures as f64);
        if s.kind == Kind::Node {
            b1.note("Node: RSS read after global.gc() (node --expose-gc)");
        }
        let n = conns.len();
        b2.m("connections", n as f64);
        b2.m("joined connects/s", n as f64 / connect_secs.max(1e-6));
        b2.m("server CPU ms per connect", connect_cpu * 1000.0 / n.max(1) as f64);
        b2.m("connect failures", failures as f64);

        // Reconnect avalanche: drop every connection at once, then all come back.
        let before = self.ctx.disconnects.get();
        for c in &conns {
            c.close();
        }
        let _ = before;
        conns.clear();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let w = Window::start(s);
        let t = Instant::now();
        let (mut back, mut failed, mut example, _) =
            self.connect(s, &users[..done], "/chat", self.p.avalanche_concurrency, |_| None).await;
        let mut retries = 0;
        while failed > 0 && retries < 3 {
            retries += 1;
            let missing: Vec<u32> = {
                let have: std::collections::HashSet<u32> = back.iter().map(|c| c.user).collect();
                users[..done].iter().copied().filter(|u| !have.contains(u)).collect()
            };
            let (mut more, f, e, _) = self.connect(s, &missing, "/chat", self.p.connect_concurrency, |_| None).await;
            back.append(&mut more);
            failed = f;
            if e.is_some() {
                example = e;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let (_, cpu, gen_cpu) = w.end(s);
        gen_max = gen_max.max(gen_cpu);
        b2.m("avalanche: seconds until all back", secs);
        b2.m("avalanche: reconnects/s", back.len() as f64 / secs.max(1e-6));
        b2.m("avalanche: server CPU s", cpu);
        b2.m("avalanche: still missing", (done - back.len()) as f64);
        if let Some(e) = example {
            b2.note(format!("avalanche: first try failures, e.g. {e}; {retries} retry rounds"));
        }
        b2.m("generator CPU, % of a core (max)", gen_max * 100.0);
        if gen_max > SATURATED {
            b2.note("GENERATOR SATURATED: numbers are a floor");
        }
        let (_, hwm) = s.rss();
        b2.m("peak RSS (VmHWM), MiB", hwm as f64 / 1024.0);
        self.server_side_losses(&mut b2, s, disc0).await;
        for c in &back {
            c.close();
        }
        (b1, b2)
    }

    // -----------------------------------------------------------------------------------
    // B3 fan-out
    // -----------------------------------------------------------------------------------
    pub async fn b3(&self, s: &Server) -> Outcome {
        let mut o = Outcome::default();
        let disc0 = self.ctx.disconnects.get();
        let groups = self.fx.groups.clone();
        let all: Vec<u32> =
            groups.iter().flat_map(|g| (g.first_user..g.first_user + g.size).map(|u| u as u32)).collect();
        let (conns, failed, example, _) = self.connect(s, &all, "/chat", self.p.connect_concurrency, |_| None).await;
        if let Some(e) = example {
            o.note(format!("{failed} connects failed (e.g. {e})"));
        }
        let mut gen_max: f64 = 0.0;
        for g in &groups {
            let members: Vec<Rc<Conn>> = conns
                .iter()
                .filter(|c| (g.first_user..g.first_user + g.size).contains(&(c.user as usize)))
                .cloned()
                .collect();
            let n = members.len() as u32;
            if n == 0 {
                continue;
            }
            s.quiet(Duration::from_secs(15)).await;
            self.ctx.new_phase();
            let label = format!("room {}: ", g.size);

            // Fixed rate.
            let rate = self.p.fanout_deliveries_per_sec / n as f64;
            let (r, secs, cpu, gen_cpu) = self.paced_room(s, &members, g.conv, rate, self.p.fixed_secs, "").await;
            gen_max = gen_max.max(gen_cpu);
            o.m(
                format!("{label}server CPU µs per delivery @{}/s", self.p.fanout_deliveries_per_sec),
                cpu * 1e6 / r.delivered.max(1) as f64,
            );
            o.m(format!("{label}p50 ms"), r.latency.p50_us as f64 / 1000.0);
            o.m(format!("{label}p99 ms"), r.latency.p99_us as f64 / 1000.0);
            Self::record_phase(&mut o, &label, &r);
            o.d(
                &format!("room{}_fixed", g.size),
                json!({"report": r, "secs": secs, "server_cpu_s": cpu, "gen_cpu": gen_cpu}),
            );

            // Ramp: double the rate each step until the server falls behind (delivers under
            // 90% of the target). The best step with p99 ≤ 50 ms and no loss is the answer.
            let mut best =
                if r.latency.p99_us <= 50_000 && r.lost == 0 { self.p.fanout_deliveries_per_sec } else { 0.0 };
            let mut top = r.delivered as f64 / secs;
            let mut ramp = Vec::new();
            let mut target = self.p.fanout_deliveries_per_sec;
            for _ in 0..self.p.ramp_steps {
                target *= 2.0;
                s.quiet(Duration::from_secs(5)).await;
                let (r, secs, cpu, gen_cpu) =
                    self.paced_room(s, &members, g.conv, target / n as f64, self.p.ramp_step_secs, "").await;
                gen_max = gen_max.max(gen_cpu);
                let achieved = r.delivered as f64 / secs;
                top = top.max(achieved);
                let keeps_up = achieved >= 0.9 * target;
                let pass = r.latency.p99_us <= 50_000 && r.lost == 0 && keeps_up;
                ramp.push(json!({"target": target, "achieved": achieved, "p50_us": r.latency.p50_us, "p99_us": r.latency.p99_us, "lost": r.lost, "server_cpu_s": cpu, "gen_cpu": gen_cpu, "pass": pass}));
                if pass {
                    best = target;
                }
                if !keeps_up {
                    break;
                }
                if gen_cpu > SATURATED {
                    o.note(format!("{label}ramp stopped: generator saturated at {target}/s"));
                    break;
                }
            }
            o.m(format!("{label}max deliveries/s with p99 ≤ 50 ms"), best);
            o.m(format!("{label}max deliveries/s reached (any latency)"), top);
            o.d(&format!("room{}_ramp", g.size), &ramp);

            // Burst: unpaced.
            s.quiet(Duration::from_secs(10)).await;
            let msgs = (self.p.burst_deliveries / n as usize).clamp(1, self.p.burst_max_msgs);
            self.ctx.new_phase();
            let w = Window::start(s);
            let t0 = self.ctx.now_us();
            let mut peak = 0;
            for i in 0..msgs {
                let c = &members[i % members.len()];
                self.send_message(c, g.conv, n, "");
                if i % 256 == 255 {
                    tokio::task::yield_now().await;
                    peak = peak.max(s.rss().0);
                }
            }
            let drain_t = Instant::now();
            loop {
                peak = peak.max(s.rss().0);
                let (d, e) = {
                    let ph = self.ctx.phase.borrow();
                    (ph.delivered, ph.expected)
                };
                if (Ctx::outstanding(&members) == 0 && d >= e)
                    || drain_t.elapsed().as_secs_f64() > self.p.drain_secs * 2.0
                {
                    break;
                }
                self.drain(&members, 0.2).await;
            }
            let last = self.ctx.phase.borrow().last_delivery_us;
            let (_, cpu, gen_cpu) = w.end(s);
            gen_max = gen_max.max(gen_cpu);
            let r = self.close_phase(&members);
            o.m(format!("{label}burst of {msgs}: seconds to deliver"), last.saturating_sub(t0) as f64 / 1e6);
            o.m(format!("{label}burst: delivered of owed, %"), 100.0 * r.delivered as f64 / r.expected.max(1) as f64);
            Self::record_phase(&mut o, &format!("{label}burst: "), &r);
            o.m(format!("{label}burst: server CPU µs per delivery"), cpu * 1e6 / r.delivered.max(1) as f64);
            o.m(format!("{label}burst: peak RSS MiB"), peak as f64 / 1024.0);
            o.d(&format!("room{}_burst", g.size), json!({"msgs": msgs, "report": r, "server_cpu_s": cpu}));
        }
        o.m("generator CPU, % of a core (max)", gen_max * 100.0);
        if gen_max > SATURATED {
            o.note("GENERATOR SATURATED in some window: that window's numbers are a floor");
        }
        self.server_side_losses(&mut o, s, disc0).await;
        for c in &conns {
            c.close();
        }
        o
    }

    /// Sends `rate` messages/s round-robin from `members` into `conv` for `secs`, drains,
    /// and returns (report, seconds, server CPU seconds, generator share of a core).
    async fn paced_room(
        &self,
        s: &Server,
        members: &[Rc<Conn>],
        conv: usize,
        rate: f64,
        secs: f64,
        pad: &str,
    ) -> (PhaseReport, f64, f64, f64) {
        self.ctx.new_phase();
        let n = members.len() as u32;
        let w = Window::start(s);
        let t0 = self.ctx.now_us();
        let mut i = 0usize;
        paced(rate, secs, |_| {
            self.send_message(&members[i % members.len()], conv, n, pad);
            i += 1;
        })
        .await;
        self.drain(members, self.p.drain_secs).await;
        let (_, cpu, gen_cpu) = w.end(s);
        // The rate achieved is over the time until the last delivery, not the sending time.
        let last = self.ctx.phase.borrow().last_delivery_us;
        let took = (last.saturating_sub(t0) as f64 / 1e6).max(secs);
        (self.close_phase(members), took, cpu, gen_cpu)
    }

    // -----------------------------------------------------------------------------------
    // B4 persisted chat (closed loop)
    // -----------------------------------------------------------------------------------
    pub async fn b4(&self, s: &Server, db_cpu: impl Fn() -> f64) -> Outcome {
        let mut o = Outcome::default();
        let disc0 = self.ctx.disconnects.get();
        let users: Vec<u32> = (0..(self.p.b4_users.min(self.fx.pairs * 2)) as u32).collect();
        let (conns, failed, example, _) = self.connect(s, &users, "/chat", self.p.connect_concurrency, |_| None).await;
        if let Some(e) = example {
            o.note(format!("{failed} connects failed (e.g. {e})"));
        }
        s.quiet(Duration::from_secs(10)).await;
        self.ctx.new_phase();
        let senders: Vec<Rc<Conn>> = conns.iter().filter(|c| (c.user as usize) < self.p.b4_senders).cloned().collect();
        let w = Window::start(s);
        let db0 = db_cpu();
        let deadline = Instant::now() + Duration::from_secs_f64(self.p.b4_secs);
        let loops = senders.iter().map(|c| {
            let c = c.clone();
            async move {
                let conv = (c.user / 2) as usize;
                while Instant::now() < deadline {
                    let notified = c.acked.notified();
                    self.send_message(&c, conv, 2, "persisted chat message");
                    if tokio::time::timeout(Duration::from_secs(5), notified).await.is_err() {
                        break;
                    }
                }
            }
        });
        futures_util::future::join_all(loops).await;
        let secs = self.p.b4_secs;
        self.drain(&conns, self.p.drain_secs).await;
        let (_, cpu, gen_cpu) = w.end(s);
        let db = db_cpu() - db0;
        let r = self.close_phase(&conns);
        o.m("senders (closed loop, 1 in flight each)", senders.len() as f64);
        o.m("stored messages/s", r.acked_ok as f64 / secs);
        self.persisted_report(o, s, disc0, &conns, r, (cpu, db, gen_cpu), false).await
    }

    /// The figures B4 and B4b share, from a closed phase; closes the connections.
    #[allow(clippy::too_many_arguments)]
    async fn persisted_report(
        &self,
        mut o: Outcome,
        s: &Server,
        disc0: u64,
        conns: &[Rc<Conn>],
        r: PhaseReport,
        (cpu, db, gen_cpu): (f64, f64, f64),
        with_p999: bool,
    ) -> Outcome {
        o.m("ack p50 ms", r.ack_latency.p50_us as f64 / 1000.0);
        o.m("ack p99 ms", r.ack_latency.p99_us as f64 / 1000.0);
        if with_p999 {
            o.m("ack p999 ms", r.ack_latency.p999_us as f64 / 1000.0);
        }
        o.m("delivery p99 ms", r.latency.p99_us as f64 / 1000.0);
        o.m("server CPU µs per stored message", cpu * 1e6 / r.acked_ok.max(1) as f64);
        o.m("database CPU µs per stored message", db * 1e6 / r.acked_ok.max(1) as f64);
        Self::record_phase(&mut o, "", &r);
        o.m("generator CPU, % of a core", gen_cpu * 100.0);
        if gen_cpu > SATURATED {
            o.note("GENERATOR SATURATED");
        }
        o.m("peak RSS (VmHWM), MiB", s.rss().1 as f64 / 1024.0);
        self.server_side_losses(&mut o, s, disc0).await;
        o.d("report", &r);
        for c in conns {
            c.close();
        }
        o
    }

    // -----------------------------------------------------------------------------------
    // B4b persisted chat, open loop: a fixed offered rate whatever the acks do
    // -----------------------------------------------------------------------------------
    pub async fn b4b(&self, s: &Server, db_cpu: impl Fn() -> f64) -> Outcome {
        let mut o = Outcome::default();
        let disc0 = self.ctx.disconnects.get();
        let users: Vec<u32> = (0..(self.p.b4_users.min(self.fx.pairs * 2)) as u32).collect();
        let (conns, failed, example, _) = self.connect(s, &users, "/chat", self.p.connect_concurrency, |_| None).await;
        if let Some(e) = example {
            o.note(format!("{failed} connects failed (e.g. {e})"));
        }
        s.quiet(Duration::from_secs(10)).await;
        self.ctx.new_phase();
        let w = Window::start(s);
        let db0 = db_cpu();
        let secs = self.p.b4_secs;
        let rate = self.p.b4b_rate;
        let n = conns.len().max(1);
        // Round robin over every user: each sends rate / users messages a second into its
        // 1:1 conversation, without waiting for acks.
        paced(rate, secs, |i| {
            let c = &conns[i as usize % n];
            self.send_message(c, (c.user / 2) as usize, 2, "persisted chat message");
        })
        .await;
        self.drain(&conns, self.p.drain_secs).await;
        let (_, cpu, gen_cpu) = w.end(s);
        let db = db_cpu() - db0;
        let r = self.close_phase(&conns);
        o.m("senders (open loop)", conns.len() as f64);
        o.m("offered messages/s", rate);
        o.m("stored messages/s", r.acked_ok as f64 / secs);
        self.persisted_report(o, s, disc0, &conns, r, (cpu, db, gen_cpu), true).await
    }

    // -----------------------------------------------------------------------------------
    // B5 latency at a fixed moderate load
    // -----------------------------------------------------------------------------------
    pub async fn b5(&self, s: &Server) -> Outcome {
        let mut o = Outcome::default();
        let disc0 = self.ctx.disconnects.get();
        let users: Vec<u32> = (0..(self.p.b5_users.min(self.fx.pairs * 2)) as u32).collect();
        let (conns, failed, example, _) = self.connect(s, &users, "/chat", self.p.connect_concurrency, |_| None).await;
        if let Some(e) = example {
            o.note(format!("{failed} connects failed (e.g. {e})"));
        }
        s.quiet(Duration::from_secs(10)).await;
        self.ctx.new_phase();
        let rate = self.p.b5_rate_per_user * conns.len() as f64;
        let w = Window::start(s);
        let mut i = 0usize;
        paced(rate, self.p.b5_secs, |_| {
            let c = &conns[i % conns.len()];
            let conv = (c.user / 2) as usize;
            self.send_typing(c, conv);
            self.send_message(c, conv, 2, "hello there, how are you doing today?");
            i += 1;
        })
        .await;
        self.drain(&conns, self.p.drain_secs).await;
        let (_, cpu, gen_cpu) = w.end(s);
        let typing = self.ctx.phase.borrow().typing;
        let r = self.close_phase(&conns);
        o.m("messages/s offered", rate);
        o.m("deliveries/s", r.delivered as f64 / self.p.b5_secs);
        o.m("p50 ms", r.latency.p50_us as f64 / 1000.0);
        o.m("p99 ms", r.latency.p99_us as f64 / 1000.0);
        o.m("p999 ms", r.latency.p999_us as f64 / 1000.0);
        o.m("max ms", r.latency.max_us as f64 / 1000.0);
        o.m("ack p99 ms", r.ack_latency.p99_us as f64 / 1000.0);
        o.m("typing events delivered", typing as f64);
        o.m("server CPU µs per message (+typing, 2 deliveries)", cpu * 1e6 / r.acked_ok.max(1) as f64);
        Self::record_phase(&mut o, "", &r);
        o.m("generator CPU, % of a core", gen_cpu * 100.0);
        if gen_cpu > SATURATED {
            o.note("GENERATOR SATURATED");
        }
        self.server_side_losses(&mut o, s, disc0).await;
        o.d("report", &r);
        for c in &conns {
            c.close();
        }
        o
    }

    // -----------------------------------------------------------------------------------
    // B6 signaling
    // -----------------------------------------------------------------------------------
    pub async fn b6(&self, s: &Server) -> Outcome {
        let mut o = Outcome::default();
        let disc0 = self.ctx.disconnects.get();
        let users: Vec<u32> = (0..(self.p.b6_pairs * 2).min(self.fx.pairs * 2) as u32).collect();
        let (conns, failed, example, _) =
            self.connect(s, &users, "/webrtc", self.p.connect_concurrency, |_| None).await;
        if let Some(e) = example {
            o.note(format!("{failed} connects failed (e.g. {e})"));
        }
        let by_user = |u: u32| conns.iter().find(|c| c.user == u).cloned();
        let pairs: Vec<(Rc<Conn>, Rc<Conn>)> =
            (0..users.len() / 2).filter_map(|k| Some((by_user(2 * k as u32)?, by_user(2 * k as u32 + 1)?))).collect();
        self.ctx.new_phase();
        // Ring, answer.
        let t = Instant::now();
        for (caller, callee) in &pairs {
            let id = caller.next_ack();
            let body = format!(
                "2/webrtc,{id}[\"call:initiate\",{{\"calleeId\":\"{}\",\"type\":\"audio\"}}]",
                self.fx.users[callee.user as usize].id
            );
            caller.emit_raw(
                &self.ctx,
                &body,
                Some((id, Pending { sent_us: self.ctx.now_us(), kind: AckKind::Initiate, tag: self.ctx.tag() })),
            );
        }
        wait_for(Duration::from_secs(15), || {
            pairs.iter().all(|(a, b)| a.call_id.borrow().is_some() && b.call_id.borrow().is_some())
        })
        .await;
        for (_, callee) in &pairs {
            let Some(call) = callee.call_id.borrow().clone() else { continue };
            let id = callee.next_ack();
            let body = format!("2/webrtc,{id}[\"call:answer\",{{\"callId\":\"{call}\"}}]");
            callee.emit_raw(
                &self.ctx,
                &body,
                Some((id, Pending { sent_us: self.ctx.now_us(), kind: AckKind::Answer, tag: self.ctx.tag() })),
            );
        }
        wait_for(Duration::from_secs(15), || {
            pairs.iter().all(|(_, b)| b.answered.get()) && Ctx::outstanding(&conns) == 0
        })
        .await;
        let setup = self.close_phase(&conns);
        let live: Vec<&(Rc<Conn>, Rc<Conn>)> =
            pairs.iter().filter(|(a, b)| b.answered.get() && a.call_id.borrow().is_some()).collect();
        o.m("calls set up (initiate + answer)", live.len() as f64);
        o.m("call set-up seconds", t.elapsed().as_secs_f64());
        o.m("set-up failed acks", (setup.ack_errors.values().sum::<u64>() + setup.no_ack) as f64);
        if !setup.ack_errors.is_empty() {
            o.note(format!("set-up ack errors: {:?}", setup.ack_errors));
        }
        s.quiet(Duration::from_secs(10)).await;

        // Offer/answer, then ICE candidates both ways at a fixed rate.
        self.ctx.new_phase();
        let sides: Vec<Rc<Conn>> = live.iter().flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
        let relay = |c: &Rc<Conn>, event: &str| {
            let Some(call) = c.call_id.borrow().clone() else { return };
            let id = c.next_ack();
            let m = self.ctx.marker();
            let body = match event {
                "ice-candidate" => format!(
                    "2/webrtc,{id}[\"ice-candidate\",{{\"callId\":\"{call}\",\"candidate\":{{\"candidate\":\"candidate:{m} 1 udp 2122260223 192.0.2.1 54321 typ host\",\"sdpMid\":\"0\",\"sdpMLineIndex\":0}}}}]"
                ),
                _ => format!(
                    "2/webrtc,{id}[\"{event}\",{{\"callId\":\"{call}\",\"sdp\":{{\"type\":\"{event}\",\"sdp\":\"v=0\\r\\no=- {m} 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\n{}\"}}}}]",
                    "a=x\\r\\n".repeat(200)
                ),
            };
            self.ctx.phase.borrow_mut().sent += 1;
            c.emit_raw(
                &self.ctx,
                &body,
                Some((id, Pending { sent_us: self.ctx.now_us(), kind: AckKind::Relay, tag: self.ctx.tag() })),
            );
            // A relay owes one delivery (to the other side).
            self.ctx.phase.borrow_mut().expected += 1;
        };
        let w = Window::start(s);
        for (a, _) in &live {
            relay(a, "offer");
        }
        for (_, b) in &live {
            relay(b, "answer");
        }
        let rate = self.p.b6_rate_per_side * sides.len() as f64;
        let mut i = 0usize;
        if !sides.is_empty() {
            paced(rate, self.p.b6_secs, |_| {
                relay(&sides[i % sides.len()], "ice-candidate");
                i += 1;
            })
            .await;
        }
        self.drain(&conns, self.p.drain_secs).await;
        let (_, cpu, gen_cpu) = w.end(s);
        let r = self.close_phase(&conns);
        o.m("relays/s offered", rate);
        o.m("relays delivered/s", r.delivered as f64 / self.p.b6_secs);
        o.m("relay p50 ms", r.latency.p50_us as f64 / 1000.0);
        o.m("relay p99 ms", r.latency.p99_us as f64 / 1000.0);
        o.m("relay p999 ms", r.latency.p999_us as f64 / 1000.0);
        o.m("server CPU µs per relay", cpu * 1e6 / r.delivered.max(1) as f64);
        Self::record_phase(&mut o, "", &r);
        o.m("generator CPU, % of a core", gen_cpu * 100.0);
        if gen_cpu > SATURATED {
            o.note("GENERATOR SATURATED");
        }
        self.server_side_losses(&mut o, s, disc0).await;
        o.d("report", &r);
        for c in &conns {
            c.close();
        }
        o
    }

    // -----------------------------------------------------------------------------------
    // B7 slow consumers
    // -----------------------------------------------------------------------------------
    pub async fn b7(&self, s: &Server) -> Outcome {
        let mut o = Outcome::default();
        let disc0 = self.ctx.disconnects.get();
        let Some(g) = self.fx.groups.get(self.p.b7_group).or(self.fx.groups.last()).copied() else { return o };
        let users: Vec<u32> = (g.first_user..g.first_user + g.size).map(|u| u as u32).collect();
        let slow_every = 20u32;
        let is_slow = |u: u32| {
            (u - g.first_user as u32) % slow_every == slow_every - 1 || (g.size < 20 && u == g.first_user as u32 + 1)
        };
        let rcv = self.p.b7_slow_rcvbuf;
        let (conns, failed, example, _) =
            self.connect(s, &users, "/chat", self.p.connect_concurrency, |u| is_slow(u).then_some(rcv)).await;
        if let Some(e) = example {
            o.note(format!("{failed} connects failed (e.g. {e})"));
        }
        let n = conns.len() as u32;
        let slow: Vec<Rc<Conn>> = conns.iter().filter(|c| is_slow(c.user)).cloned().collect();
        let healthy: Vec<Rc<Conn>> = conns.iter().filter(|c| !is_slow(c.user)).cloned().collect();
        for c in &slow {
            c.slow.set(true);
        }
        s.quiet(Duration::from_secs(15)).await;
        s.gc().await;
        let (rss0, _) = s.rss();
        self.ctx.new_phase();
        for c in &slow {
            c.pause();
        }
        // Sample the server's memory while the stream runs.
        let samples = Rc::new(std::cell::RefCell::new(Vec::<(f64, u64)>::new()));
        let tcp_mem0 = procfs::tcp_mem_kib();
        let tcp_peak = Rc::new(std::cell::Cell::new(tcp_mem0));
        let sampler = {
            let samples = samples.clone();
            let tcp_peak = tcp_peak.clone();
            let pid = s.pid;
            let t = Instant::now();
            tokio::task::spawn_local(async move {
                loop {
                    tcp_peak.set(tcp_peak.get().max(procfs::tcp_mem_kib()));
                    if let Some((rss, _)) = procfs::rss_kib(pid) {
                        samples.borrow_mut().push((t.elapsed().as_secs_f64(), rss));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        let pad = "x".repeat(self.p.b7_pad);
        let w = Window::start(s);
        let mut i = 0usize;
        paced(self.p.b7_rate, self.p.b7_secs, |_| {
            self.send_message(&healthy[i % healthy.len()], g.conv, n, &pad);
            i += 1;
        })
        .await;
        // Healthy clients finish; the slow ones are still stopped.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (_, cpu, gen_cpu) = w.end(s);
        let (healthy_p99, healthy_p50, acked, healthy_delivered) = {
            let ph = self.ctx.phase.borrow();
            (ph.lat.summary().p99_us, ph.lat.summary().p50_us, ph.acked_ok, ph.delivered - ph.delivered_slow)
        };
        let peak_stream = samples.borrow().iter().map(|x| x.1).max().unwrap_or(0);
        let disconnected_while_stopped = slow.iter().filter(|c| !c.alive.get()).count();
        // The slow ones read again.
        for c in &slow {
            c.resume();
        }
        let t = Instant::now();
        let mut last = u64::MAX;
        while t.elapsed().as_secs_f64() < self.p.drain_secs * 2.0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let d = self.ctx.phase.borrow().delivered_slow;
            if d == last {
                break;
            }
            last = d;
        }
        sampler.abort();
        let (rss_end, hwm) = s.rss();
        let (slow_delivered, slow_gaps, slow_lat) = {
            let ph = self.ctx.phase.borrow();
            (ph.delivered_slow, ph.gaps_slow, ph.lat_slow.summary())
        };
        let r = self.close_phase(&conns);
        let owed_slow = acked * slow.len() as u64;
        let owed_healthy = acked * healthy.len() as u64;

        // Catch-up by `seq` over REST, as a client that saw a gap does: everything after the
        // seq the conversation had before the stream, page by page.
        let (min_seq, max_seq) = (r.min_seq, r.max_seq);
        let mut recovered = 0u64;
        let mut recover_failed = 0u64;
        let http = reqwest::Client::new();
        let conv_id = self.fx.conversations[g.conv].id.clone();
        for c in &slow {
            let token = &self.fx.users[c.user as usize].token;
            let mut cursor = min_seq.saturating_sub(1);
            for _ in 0..1000 {
                if cursor >= max_seq {
                    break;
                }
                let url = format!("{}/api/v1/messages/conversation/{conv_id}?afterSeq={cursor}&limit=100", s.base());
                let page = match http.get(&url).bearer_auth(token).send().await {
                    Ok(resp) => resp.json::<Value>().await.ok(),
                    Err(_) => None,
                };
                let Some(data) = page.as_ref().and_then(|v| v["data"].as_array()) else {
                    recover_failed += 1;
                    break;
                };
                if data.is_empty() {
                    break;
                }
                for m in data {
                    let seq = m["seq"].as_u64().unwrap_or(0);
                    if seq >= min_seq && seq <= max_seq {
                        recovered += 1;
                    }
                    cursor = cursor.max(seq);
                }
            }
        }
        let series: Vec<(f64, f64)> =
            samples.borrow().iter().map(|(t, r)| ((t * 10.0).round() / 10.0, *r as f64 / 1024.0)).collect();
        o.m("members / slow (5%)", n as f64);
        o.m("slow consumers", slow.len() as f64);
        o.m("messages acked", acked as f64);
        o.m("healthy p50 ms", healthy_p50 as f64 / 1000.0);
        o.m("healthy p99 ms", healthy_p99 as f64 / 1000.0);
        o.m("healthy lost deliveries", owed_healthy.saturating_sub(healthy_delivered) as f64);
        o.m("RSS before stream, MiB", rss0 as f64 / 1024.0);
        o.m("RSS peak during stream, MiB", peak_stream as f64 / 1024.0);
        o.m("RSS after slow ones drained, MiB", rss_end as f64 / 1024.0);
        o.m("VmHWM, MiB", hwm as f64 / 1024.0);
        o.m(
            "kernel TCP buffers, growth at peak, MiB (whole machine)",
            tcp_peak.get().saturating_sub(tcp_mem0) as f64 / 1024.0,
        );
        o.m("slow: owed deliveries", owed_slow as f64);
        o.m("slow: delivered live (after resuming)", slow_delivered as f64);
        o.m("slow: lost live", owed_slow.saturating_sub(slow_delivered) as f64);
        o.m("slow: seq gaps seen", slow_gaps as f64);
        o.m(
            "slow: disconnected by server",
            disconnected_while_stopped.max(slow.iter().filter(|c| !c.alive.get()).count()) as f64,
        );
        o.m("slow: stream messages fetched by afterSeq, % of owed", 100.0 * recovered as f64 / owed_slow.max(1) as f64);
        o.m("slow: catch-up requests failed", recover_failed as f64);
        o.m("slow: live p99 ms (incl. stopped time)", slow_lat.p99_us as f64 / 1000.0);
        o.m("server CPU s during stream", cpu);
        o.m("generator CPU, % of a core", gen_cpu * 100.0);
        if gen_cpu > SATURATED {
            o.note("GENERATOR SATURATED");
        }
        o.d("rss_mib_series", series);
        self.server_side_losses(&mut o, s, disc0).await;
        o.d("report", &r);
        for c in &conns {
            c.close();
        }
        o
    }
}

/// Calls `f` `rate` times a second for `secs`, spread evenly (1 ms ticks).
pub async fn paced(rate: f64, secs: f64, mut f: impl FnMut(u64)) {
    let total = (rate * secs).round() as u64;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        while sent < due {
            f(sent);
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn wait_for(max: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < max && !cond() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
