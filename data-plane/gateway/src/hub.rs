//! The sockets held by this process.
//!
//! Each socket is a slot in one of [`SHARDS`] maps keyed by (tenant, shopper): its bounded
//! queue, when it last heard from the browser, and the key it was opened with. The hub
//! also keeps which tenants have sockets here, so the process subscribes to those tenants'
//! channels only ([`crate::route`]), and does the keepalive work of every socket in one
//! task ([`heartbeat`]) instead of a timer per socket.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, Hash},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use nudge_contracts::ShopperId;
use nudge_data_plane_directory::Directory;
use nudge_tenants::{PublishableKey, TenantId};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

/// Messages waiting for one socket. Bounded: a shopper whose browser stops reading cannot
/// make the process hold an unbounded backlog; a socket whose queue is full when something
/// arrives is evicted (closed with [`CLOSE_SLOW_CONSUMER`]) rather than left to miss it.
pub const SEND_QUEUE: usize = 32;

/// Close code of a socket evicted because it did not keep up with its messages.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code when the store stopped taking traffic or the key was revoked.
pub const CLOSE_NOT_AUTHORIZED: u16 = 4003;
/// Close code of a socket whose store moved to another cell: its snippet asks for a new
/// session, which tells it where the store is now (421 `tenant_moved`).
pub const CLOSE_TENANT_MOVED: u16 = 4009;
/// Close code of a socket that stayed silent (not even a pong) past the idle timeout.
pub const CLOSE_IDLE: u16 = 4000;

/// Sockets one shopper may hold in one process (tabs). Tokens are issued for any shopper id
/// with the public key, so without this one client could take a store's whole cap.
pub const MAX_PER_SHOPPER: usize = 8;

/// Independent locks over the sockets: delivery and keepalive sweeps contend per shard.
const SHARDS: usize = 16;

/// A shopper within a tenant: the address an intervention is delivered to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShopperAddress {
    pub tenant: TenantId,
    pub shopper: ShopperId,
}

/// An intervention or announcement rendered once, shared by every socket it goes to: each
/// socket's frame takes the same bytes (a reference count, not a copy).
#[derive(Debug)]
pub struct Pushed {
    pub intervention_id: Box<str>,
    pub text: Utf8Bytes,
}

/// What a socket's task is asked to do.
#[derive(Debug, Clone)]
pub enum Outbound {
    Push(Arc<Pushed>),
    /// An announcement: sent, but neither recorded as the socket's cursor nor expected back
    /// as an acknowledgement.
    Announce(Arc<Pushed>),
    Ping,
    /// Read the shopper's history again: this process may have missed messages while its
    /// subscription was down.
    Resync,
    Close(u16, Arc<str>),
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Full,
    Closed,
}

/// One socket's bounded queue. Unlike a channel it allocates nothing until something is
/// queued, so an idle socket costs only this struct.
#[derive(Default)]
pub struct Queue {
    state: Mutex<QueueState>,
    ready: Notify,
}

#[derive(Default)]
struct QueueState {
    items: std::collections::VecDeque<Outbound>,
    closed: bool,
}

impl Queue {
    fn push(&self, message: Outbound) -> Result<(), Refused> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.items.len() >= SEND_QUEUE {
            return Err(Refused::Full);
        }
        state.items.push_back(message);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Ends the queue of a socket evicted for falling behind: what is queued is dropped (the
    /// browser resumes it from the history when it reconnects), so the socket closes now.
    fn evict(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.items = std::collections::VecDeque::new();
        drop(state);
        self.ready.notify_one();
    }

    /// The next message; `None` once the queue is closed and drained. Cancel-safe.
    pub async fn recv(&self) -> Option<Outbound> {
        loop {
            {
                let mut state = lock(&self.state);
                if let Some(message) = state.items.pop_front() {
                    if state.items.is_empty() {
                        // A burst is over: give the memory back, idle sockets hold none.
                        state.items = std::collections::VecDeque::new();
                    }
                    return Some(message);
                }
                if state.closed {
                    return None;
                }
            }
            // A notification given while no one waits is kept, so a push between the check
            // above and this wait is not missed.
            self.ready.notified().await;
        }
    }

    /// Waits until the socket must end, taking nothing else from the queue: `None` once it
    /// was evicted, or the code and reason of a close queued for it (a drain, a revoked
    /// key). A socket busy reading its history watches this, so it neither delays a close
    /// nor holds its slot after eviction. Cancel-safe.
    pub async fn ending(&self) -> Option<(u16, Arc<str>)> {
        loop {
            {
                let state = lock(&self.state);
                if state.closed {
                    return None;
                }
                let close = state.items.iter().find_map(|m| match m {
                    Outbound::Close(code, reason) => Some((*code, reason.clone())),
                    _ => None,
                });
                if close.is_some() {
                    return close;
                }
            }
            // Woken by every push (other messages stay queued for `recv`, which looks
            // before it waits, so taking the wake-up here loses nothing).
            self.ready.notified().await;
        }
    }

    /// The next message if one is queued (tests look without waiting).
    #[cfg(test)]
    pub(crate) fn try_recv(&self) -> Option<Outbound> {
        lock(&self.state).items.pop_front()
    }
}

struct Slot {
    id: u64,
    queue: Arc<Queue>,
    /// Seconds since the hub's epoch when the browser last sent anything.
    heard: Arc<AtomicU32>,
    key: PublishableKey,
}

type Shard = HashMap<ShopperAddress, Vec<Slot>>;

/// What delivering to a shopper did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    pub delivered: usize,
    /// Sockets whose queue was full: evicted (closed as slow consumers), the message not
    /// queued for them. They resume from the shopper's history when they reconnect.
    pub evicted: usize,
}

/// Sockets of this process. A shopper may have several (tabs).
pub struct Hub {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    tenants: Mutex<HashMap<TenantId, u32>>,
    next_id: AtomicU64,
    epoch: Instant,
    /// Signalled when a tenant gains its first socket here or loses its last.
    tenants_changed: Notify,
    /// Set by [`Hub::close_all`]: no socket registers any more.
    closing: std::sync::atomic::AtomicBool,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            hasher: Default::default(),
            tenants: Mutex::default(),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            tenants_changed: Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// Why a socket was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The tenant already holds as many sockets as its plan allows here.
    TenantCap(u32),
    /// The shopper already holds [`MAX_PER_SHOPPER`] sockets here.
    ShopperCap,
    /// The process is draining.
    Closing,
}

/// Keeps a socket registered; dropping it unregisters.
pub struct Registration {
    hub: Arc<Hub>,
    address: ShopperAddress,
    id: u64,
    heard: Arc<AtomicU32>,
}

impl Registration {
    /// Records that the browser sent something (a pong, an acknowledgement).
    pub fn heard(&self) {
        self.heard.store(self.hub.now_secs(), Ordering::Relaxed);
    }

    pub fn address(&self) -> &ShopperAddress {
        &self.address
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        {
            let mut shard = self.hub.shard(&self.address);
            if let Some(list) = shard.get_mut(&self.address) {
                list.retain(|s| s.id != self.id);
                if list.is_empty() {
                    shard.remove(&self.address);
                }
            }
        }
        let mut tenants = self.hub.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = tenants.get_mut(&self.address.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                tenants.remove(&self.address.tenant);
                self.hub.tenants_changed.notify_one();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    fn shard(&self, address: &ShopperAddress) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(address) as usize) % self.shards.len();
        lock(&self.shards[i])
    }

    fn now_secs(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// Registers a socket for `address`, opened with `key`, unless its tenant already holds
    /// `cap` sockets here; what the socket must do arrives on the returned receiver.
    pub fn register(
        self: &Arc<Self>,
        address: ShopperAddress,
        key: PublishableKey,
        cap: u32,
    ) -> Result<(Registration, Arc<Queue>), Refusal> {
        let mut tenants = lock(&self.tenants);
        // Checked under the tenants lock, which `close_all` takes to set it: a socket either
        // registers before the drain walks the sockets or is refused.
        if self.closing.load(Ordering::Acquire) {
            return Err(Refusal::Closing);
        }
        if self.shard(&address).get(&address).is_some_and(|list| list.len() >= MAX_PER_SHOPPER) {
            return Err(Refusal::ShopperCap);
        }
        let held = tenants.entry(address.tenant).or_insert(0);
        if *held >= cap {
            if *held == 0 {
                tenants.remove(&address.tenant);
            }
            return Err(Refusal::TenantCap(cap));
        }
        *held += 1;
        if *held == 1 {
            self.tenants_changed.notify_one();
        }
        let queue = Arc::new(Queue::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let heard = Arc::new(AtomicU32::new(self.now_secs()));
        self.shard(&address).entry(address.clone()).or_default().push(Slot {
            id,
            queue: queue.clone(),
            heard: heard.clone(),
            key,
        });
        drop(tenants);
        Ok((Registration { hub: self.clone(), address, id, heard }, queue))
    }

    /// Queues `message` on every socket of `address` held here. A socket whose queue is full
    /// has its queue closed and leaves the map: its task sees the queue end and closes the
    /// socket as a slow consumer (the slot stays taken until it has).
    pub fn deliver(&self, address: &ShopperAddress, message: Arc<Pushed>) -> Delivery {
        let mut shard = self.shard(address);
        let mut outcome = Delivery::default();
        let Some(list) = shard.get_mut(address) else { return outcome };
        list.retain(|slot| match slot.queue.push(Outbound::Push(message.clone())) {
            Ok(()) => {
                outcome.delivered += 1;
                true
            }
            Err(Refused::Full) => {
                slot.queue.evict();
                outcome.evicted += 1;
                false
            }
            Err(Refused::Closed) => false,
        });
        if list.is_empty() {
            shard.remove(address);
        }
        outcome
    }

    /// Queues `message` on every socket of `tenant` held here, whatever its shopper: one
    /// pass over the sockets, the same rendered bytes for each. A socket whose queue is full
    /// is evicted as [`Hub::deliver`] does.
    pub fn announce(&self, tenant: &TenantId, message: &Arc<Pushed>) -> Delivery {
        self.for_each(|address, _| (address.tenant == *tenant).then(|| Outbound::Announce(message.clone())))
    }

    /// Sends `what(slot)` to every socket for which it gives something, evicting a socket
    /// whose queue is full: the sockets it was queued for, and those evicted.
    fn for_each(&self, mut what: impl FnMut(&ShopperAddress, &Slot) -> Option<Outbound>) -> Delivery {
        let mut outcome = Delivery::default();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.retain(|address, list| {
                list.retain(|slot| match what(address, slot) {
                    None => true,
                    Some(message) => match slot.queue.push(message) {
                        Ok(()) => {
                            outcome.delivered += 1;
                            true
                        }
                        Err(Refused::Full) => {
                            slot.queue.evict();
                            outcome.evicted += 1;
                            false
                        }
                        Err(Refused::Closed) => false,
                    },
                });
                !list.is_empty()
            });
        }
        outcome
    }

    /// Asks every socket to re-read its shopper's history. Used after this process's
    /// subscription was re-established: messages published meanwhile are only there. The
    /// number of sockets evicted instead.
    pub fn resync_all(&self) -> usize {
        self.for_each(|_, _| Some(Outbound::Resync)).evicted
    }

    /// Asks the sockets of `tenants` to re-read their shoppers' history: this process has
    /// just subscribed to those tenants, and a socket that read its history before then may
    /// have missed what was published in between. The number of sockets evicted instead.
    pub fn resync_tenants(&self, tenants: &HashSet<TenantId>) -> usize {
        self.for_each(|address, _| tenants.contains(&address.tenant).then_some(Outbound::Resync)).evicted
    }

    /// Closes every socket with `code` and refuses new ones from now on (drain). The number
    /// of sockets closing (those whose queue was full close as slow consumers).
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        {
            let _tenants = lock(&self.tenants);
            self.closing.store(true, Ordering::Release);
        }
        let reason: Arc<str> = reason.into();
        let outcome = self.for_each(|_, _| Some(Outbound::Close(code, reason.clone())));
        outcome.delivered + outcome.evicted
    }

    /// One keepalive pass over the sockets of `slice` (of `slices`): a socket whose key no
    /// longer opens its tenant is closed with [`CLOSE_NOT_AUTHORIZED`], one silent for
    /// longer than `idle` with [`CLOSE_IDLE`], and one silent for at least `quiet` is
    /// pinged. A socket heard from more recently is left alone: its browser is there and
    /// its connection is carrying traffic, so a busy gateway does not spend a ping and a
    /// pong on every socket it is already talking to.
    pub fn sweep(
        &self,
        slice: u64,
        slices: u64,
        quiet: Duration,
        idle: Duration,
        refusal: impl Fn(&TenantId, &PublishableKey) -> Option<(u16, &'static str)>,
    ) -> Sweep {
        self.sweep_at(self.now_secs(), slice, slices, quiet, idle, refusal)
    }

    fn sweep_at(
        &self,
        now: u32,
        slice: u64,
        slices: u64,
        quiet: Duration,
        idle: Duration,
        refusal: impl Fn(&TenantId, &PublishableKey) -> Option<(u16, &'static str)>,
    ) -> Sweep {
        let idle = u32::try_from(idle.as_secs()).unwrap_or(u32::MAX);
        let quiet = u32::try_from(quiet.as_secs()).unwrap_or(u32::MAX);
        let mut sweep = Sweep::default();
        sweep.evicted = self
            .for_each(|address, slot| {
                if slot.id % slices != slice {
                    return None;
                }
                if let Some((code, reason)) = refusal(&address.tenant, &slot.key) {
                    sweep.unauthorized += 1;
                    return Some(Outbound::Close(code, reason.into()));
                }
                let silent = now.saturating_sub(slot.heard.load(Ordering::Relaxed));
                if silent > idle {
                    sweep.idle += 1;
                    return Some(Outbound::Close(CLOSE_IDLE, "idle".into()));
                }
                if silent < quiet {
                    sweep.heard += 1;
                    return None;
                }
                sweep.pinged += 1;
                Some(Outbound::Ping)
            })
            .evicted;
        sweep
    }

    /// Whether a socket of `address` is held here.
    pub fn holds(&self, address: &ShopperAddress) -> bool {
        self.shard(address).contains_key(address)
    }

    /// Open sockets.
    pub fn connections(&self) -> usize {
        self.shards.iter().map(|s| lock(s).values().map(Vec::len).sum::<usize>()).sum()
    }

    /// The sockets each tenant holds here (tenants with none are absent).
    pub fn sockets_by_tenant(&self) -> Vec<(TenantId, u32)> {
        lock(&self.tenants).iter().map(|(tenant, n)| (*tenant, *n)).collect()
    }

    /// Tenants with at least one socket here.
    pub fn tenants(&self) -> HashSet<TenantId> {
        lock(&self.tenants).keys().copied().collect()
    }

    /// Resolves when the set of [`Hub::tenants`] may have changed since the last call.
    pub async fn tenants_changed(&self) {
        self.tenants_changed.notified().await;
    }
}

/// What one keepalive pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    pub pinged: usize,
    /// Sockets heard from recently enough to need no ping.
    pub heard: usize,
    pub idle: usize,
    pub unauthorized: usize,
    pub evicted: usize,
}

/// Keepalive for every socket of the hub: every `ping_interval / slices` one slice of the
/// sockets is swept, so each socket is pinged (and its key and silence checked) once per
/// `ping_interval` by a single task.
pub async fn heartbeat(
    hub: Arc<Hub>,
    directory: Arc<Directory>,
    ping_interval: Duration,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) {
    const SLICES: u64 = 10;
    let mut tick = tokio::time::interval((ping_interval / SLICES as u32).max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slice = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A socket is swept once per interval and pinged unless heard from in its latter
        // half, so no connection goes longer than about one and a half intervals without
        // traffic (load balancers close idle ones) or without a check that it is alive.
        let sweep = hub.sweep(slice, SLICES, ping_interval / 2, idle_timeout, |tenant, key| {
            if directory.by_key(key).is_some_and(|t| t.tenant_id == *tenant && t.state.accepts_traffic()) {
                None
            } else if directory.elsewhere(key).is_some() {
                Some((CLOSE_TENANT_MOVED, "tenant_moved"))
            } else {
                Some((CLOSE_NOT_AUTHORIZED, "not_authorized"))
            }
        });
        if sweep.unauthorized + sweep.idle + sweep.evicted > 0 {
            tracing::debug!(?sweep, "keepalive closed sockets");
        }
        slice = (slice + 1) % SLICES;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(tenant: TenantId, shopper: &str) -> ShopperAddress {
        ShopperAddress { tenant, shopper: ShopperId::parse(shopper).unwrap() }
    }

    fn key() -> PublishableKey {
        PublishableKey::generate().unwrap()
    }

    fn pushed(id: &str) -> Arc<Pushed> {
        Arc::new(Pushed { intervention_id: id.into(), text: format!("{{\"id\":\"{id}\"}}").into() })
    }

    fn id_of(o: Option<Outbound>) -> String {
        match o {
            Some(Outbound::Push(p)) => p.intervention_id.to_string(),
            other => panic!("expected a push, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn delivers_only_to_the_same_tenant_and_shopper() {
        let hub = Arc::new(Hub::default());
        let (a, b) = (TenantId::new(), TenantId::new());
        let (_ra, rx_a) = hub.register(addr(a, "s1"), key(), 10).unwrap();
        let (_rb, rx_b) = hub.register(addr(b, "s1"), key(), 10).unwrap();
        assert_eq!(hub.deliver(&addr(a, "s1"), pushed("hello")).delivered, 1);
        assert_eq!(id_of(rx_a.recv().await), "hello");
        assert!(rx_b.try_recv().is_none(), "same shopper id in another tenant gets nothing");
    }

    #[tokio::test]
    async fn announces_to_every_socket_of_the_tenant_and_no_other() {
        let hub = Arc::new(Hub::default());
        let (a, b) = (TenantId::new(), TenantId::new());
        let (_r1, tab1) = hub.register(addr(a, "s1"), key(), 10).unwrap();
        let (_r2, tab2) = hub.register(addr(a, "s1"), key(), 10).unwrap();
        let (_r3, other_shopper) = hub.register(addr(a, "s2"), key(), 10).unwrap();
        let (_r4, other_tenant) = hub.register(addr(b, "s1"), key(), 10).unwrap();
        let message = pushed("ann_1");
        assert_eq!(hub.announce(&a, &message), Delivery { delivered: 3, evicted: 0 });
        for rx in [&tab1, &tab2, &other_shopper] {
            match rx.recv().await {
                Some(Outbound::Announce(p)) => {
                    assert_eq!(&*p.intervention_id, "ann_1");
                    assert!(Arc::ptr_eq(&p, &message), "every socket shares the one rendering");
                }
                other => panic!("expected an announcement, got {other:?}"),
            }
        }
        assert!(other_tenant.try_recv().is_none(), "another tenant's sockets get nothing");
        // A socket that stopped reading is evicted by announcements as by interventions.
        for _ in 0..SEND_QUEUE {
            hub.announce(&b, &message);
        }
        assert_eq!(hub.announce(&b, &message), Delivery { delivered: 0, evicted: 1 });
        assert_eq!(hub.connections(), 3);
    }

    #[tokio::test]
    async fn unregisters_on_drop_and_evicts_a_socket_that_does_not_keep_up() {
        let hub = Arc::new(Hub::default());
        let t = TenantId::new();
        let (reg, rx) = hub.register(addr(t, "s"), key(), 10).unwrap();
        let (_keeps_up, other_rx) = hub.register(addr(t, "s"), key(), 10).unwrap();
        for _ in 0..SEND_QUEUE {
            assert_eq!(hub.deliver(&addr(t, "s"), pushed("x")).delivered, 2);
            other_rx.recv().await.unwrap();
        }
        // The first socket read nothing: the next message evicts it, the other gets it.
        assert_eq!(hub.deliver(&addr(t, "s"), pushed("y")), Delivery { delivered: 1, evicted: 1 });
        assert_eq!(id_of(other_rx.recv().await), "y");
        assert!(rx.recv().await.is_none(), "the queue ends at once (the backlog resumes from history)");
        assert_eq!(hub.connections(), 1);
        drop(reg);
        assert_eq!(hub.deliver(&addr(t, "s"), pushed("z")), Delivery { delivered: 1, evicted: 0 });
    }

    #[tokio::test]
    async fn a_socket_waiting_on_its_history_learns_of_a_close_or_an_eviction_and_nothing_else() {
        use futures_util::FutureExt;
        let hub = Arc::new(Hub::default());
        let t = TenantId::new();
        let (_reg, rx) = hub.register(addr(t, "s"), key(), 10).unwrap();
        assert_eq!(hub.deliver(&addr(t, "s"), pushed("x")).delivered, 1);
        assert!(rx.ending().now_or_never().is_none(), "a message is no reason to stop");
        hub.close_all(1012, "service_restart");
        assert_eq!(rx.ending().await, Some((1012, "service_restart".into())));
        assert_eq!(id_of(rx.recv().await), "x", "what was queued is still there, in order");
        assert!(matches!(rx.recv().await, Some(Outbound::Close(1012, _))));

        let hub = Arc::new(Hub::default());
        let (_reg, slow) = hub.register(addr(t, "s"), key(), 10).unwrap();
        let waiting = tokio::spawn({
            let slow = slow.clone();
            async move { slow.ending().await }
        });
        for _ in 0..=SEND_QUEUE {
            hub.deliver(&addr(t, "s"), pushed("y"));
        }
        assert_eq!(waiting.await.unwrap(), None, "evicted while it waited");
    }

    #[test]
    fn caps_sockets_per_tenant_and_frees_slots() {
        let hub = Arc::new(Hub::default());
        let (t, other) = (TenantId::new(), TenantId::new());
        let first = hub.register(addr(t, "a"), key(), 2).unwrap();
        let _second = hub.register(addr(t, "b"), key(), 2).unwrap();
        assert!(matches!(hub.register(addr(t, "c"), key(), 2), Err(Refusal::TenantCap(2))));
        assert!(hub.register(addr(other, "a"), key(), 2).is_ok(), "another tenant is not affected");
        drop(first);
        assert!(hub.register(addr(t, "c"), key(), 2).is_ok(), "a closed socket frees its slot");
        assert!(matches!(hub.register(addr(TenantId::new(), "a"), key(), 0), Err(Refusal::TenantCap(0))));
        let tabs: Vec<_> =
            (0..MAX_PER_SHOPPER).map(|_| hub.register(addr(other, "tabs"), key(), 100).unwrap()).collect();
        assert!(matches!(hub.register(addr(other, "tabs"), key(), 100), Err(Refusal::ShopperCap)));
        drop(tabs);
        hub.close_all(1012, "draining");
        assert!(
            matches!(hub.register(addr(other, "late"), key(), 100), Err(Refusal::Closing)),
            "a drain refuses newcomers"
        );
    }

    #[tokio::test]
    async fn tracks_the_tenants_it_holds_sockets_for() {
        let hub = Arc::new(Hub::default());
        let (a, b) = (TenantId::new(), TenantId::new());
        let ra = hub.register(addr(a, "s"), key(), 10).unwrap();
        let ra2 = hub.register(addr(a, "t"), key(), 10).unwrap();
        hub.tenants_changed().await;
        let (_rb, rx_b) = hub.register(addr(b, "s"), key(), 10).unwrap();
        assert_eq!(hub.tenants(), HashSet::from([a, b]));
        drop(ra);
        assert_eq!(hub.tenants(), HashSet::from([a, b]), "a still has a socket");
        drop(ra2);
        hub.tenants_changed().await;
        assert_eq!(hub.tenants(), HashSet::from([b]));

        let (_rc, rx_c) = hub.register(addr(TenantId::new(), "s"), key(), 10).unwrap();
        assert_eq!(hub.resync_tenants(&HashSet::from([b])), 0);
        assert!(matches!(rx_b.try_recv(), Some(Outbound::Resync)));
        assert!(rx_c.try_recv().is_none(), "only the named tenants' sockets resync");
    }

    #[tokio::test]
    async fn a_sweep_pings_live_sockets_and_closes_idle_and_unauthorized_ones() {
        let hub = Arc::new(Hub::default());
        let t = TenantId::new();
        let (revoked, kept) = (key(), key());
        let (_r1, rx_revoked) = hub.register(addr(t, "a"), revoked.clone(), 10).unwrap();
        let (live, rx_live) = hub.register(addr(t, "b"), kept.clone(), 10).unwrap();
        let (_r3, rx_silent) = hub.register(addr(t, "c"), kept.clone(), 10).unwrap();
        let (talking, rx_talking) = hub.register(addr(t, "d"), kept.clone(), 10).unwrap();
        live.heard.store(25, Ordering::Relaxed);
        talking.heard.store(27, Ordering::Relaxed);
        let (quiet, idle) = (Duration::from_secs(5), Duration::from_secs(20));
        let sweep = hub.sweep_at(30, 0, 1, quiet, idle, |_, k| {
            (*k == revoked).then_some((CLOSE_NOT_AUTHORIZED, "not_authorized"))
        });
        assert_eq!(sweep, Sweep { pinged: 1, heard: 1, idle: 1, unauthorized: 1, evicted: 0 });
        assert!(matches!(rx_revoked.recv().await, Some(Outbound::Close(CLOSE_NOT_AUTHORIZED, _))));
        assert!(matches!(rx_live.recv().await, Some(Outbound::Ping)), "silent for the quiet time: pinged");
        assert!(matches!(rx_silent.recv().await, Some(Outbound::Close(CLOSE_IDLE, _))));
        assert!(rx_talking.try_recv().is_none(), "heard from within the quiet time: left alone");
        // Once it falls silent, it is pinged too.
        let sweep = hub.sweep_at(32, 0, 1, quiet, idle, |_, _| None);
        assert_eq!((sweep.pinged, sweep.heard), (2, 0));
        assert!(matches!(rx_talking.recv().await, Some(Outbound::Ping)));
        // Slices: each socket belongs to exactly one.
        let swept: usize = (0..4)
            .map(|s| hub.sweep_at(32, s, 4, quiet, Duration::from_secs(60), |_, _| None))
            .map(|sweep| sweep.pinged + sweep.heard)
            .sum();
        assert_eq!(swept, 4);
    }
}
