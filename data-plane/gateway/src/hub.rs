//! The sockets held by this process.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use nudge_contracts::ShopperId;
use nudge_tenants::TenantId;
use tokio::sync::mpsc;

/// Frames waiting for one socket. Bounded: a shopper whose browser stops reading cannot
/// make the process hold an unbounded backlog; a socket whose queue is full when a frame
/// arrives is evicted (its socket closes with [`CLOSE_SLOW_CONSUMER`]) rather than left
/// to miss that frame silently.
pub const SEND_QUEUE: usize = 32;

/// Close code of a socket evicted because it did not keep up with its frames.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// A shopper within a tenant: the address an intervention is delivered to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShopperAddress {
    pub tenant: TenantId,
    pub shopper: ShopperId,
}

type Frame = Arc<str>;
type Sockets = HashMap<ShopperAddress, Vec<(u64, mpsc::Sender<Frame>)>>;

/// What delivering to a shopper did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    pub delivered: usize,
    /// Sockets whose queue was full: evicted (closed as slow consumers), the frame not
    /// queued for them.
    pub evicted: usize,
}

/// Sockets of this process. A shopper may have several (tabs).
#[derive(Default)]
pub struct Hub {
    sockets: Mutex<Inner>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Inner {
    sockets: Sockets,
    per_tenant: HashMap<TenantId, u32>,
}

/// The tenant already holds as many sockets as its plan allows here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapReached(pub u32);

/// Keeps a socket registered; dropping it unregisters.
pub struct Registration {
    hub: Arc<Hub>,
    address: ShopperAddress,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.hub.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = inner.sockets.get_mut(&self.address) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                inner.sockets.remove(&self.address);
            }
        }
        if let Some(n) = inner.per_tenant.get_mut(&self.address.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.per_tenant.remove(&self.address.tenant);
            }
        }
    }
}

impl Hub {
    /// Registers a socket for `address` unless its tenant already holds `cap` sockets here;
    /// frames for it arrive on the returned receiver.
    pub fn register(
        self: &Arc<Self>,
        address: ShopperAddress,
        cap: u32,
    ) -> Result<(Registration, mpsc::Receiver<Frame>), CapReached> {
        let mut inner = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        let held = inner.per_tenant.entry(address.tenant).or_insert(0);
        if *held >= cap {
            return Err(CapReached(cap));
        }
        *held += 1;
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        inner.sockets.entry(address.clone()).or_default().push((id, tx));
        Ok((Registration { hub: self.clone(), address, id }, rx))
    }

    /// Queues `frame` on every socket of `address` held here. A socket whose queue is full
    /// loses its sender: its task sees the queue end and closes the socket as a slow
    /// consumer (the slot stays taken until it has).
    pub fn deliver(&self, address: &ShopperAddress, frame: Frame) -> Delivery {
        let mut inner = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut outcome = Delivery::default();
        let Some(list) = inner.sockets.get_mut(address) else { return outcome };
        list.retain(|(_, tx)| match tx.try_send(frame.clone()) {
            Ok(()) => {
                outcome.delivered += 1;
                true
            }
            Err(_) => {
                outcome.evicted += 1;
                false
            }
        });
        if list.is_empty() {
            inner.sockets.remove(address);
        }
        outcome
    }

    /// Open sockets.
    pub fn connections(&self) -> usize {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner).sockets.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(tenant: TenantId, shopper: &str) -> ShopperAddress {
        ShopperAddress { tenant, shopper: ShopperId::parse(shopper).unwrap() }
    }

    #[tokio::test]
    async fn delivers_only_to_the_same_tenant_and_shopper() {
        let hub = Arc::new(Hub::default());
        let (a, b) = (TenantId::new(), TenantId::new());
        let (_ra, mut rx_a) = hub.register(addr(a, "s1"), 10).unwrap();
        let (_rb, mut rx_b) = hub.register(addr(b, "s1"), 10).unwrap();
        assert_eq!(hub.deliver(&addr(a, "s1"), "hello".into()).delivered, 1);
        assert_eq!(&*rx_a.recv().await.unwrap(), "hello");
        assert!(rx_b.try_recv().is_err(), "same shopper id in another tenant gets nothing");
    }

    #[tokio::test]
    async fn unregisters_on_drop_and_evicts_a_socket_that_does_not_keep_up() {
        let hub = Arc::new(Hub::default());
        let t = TenantId::new();
        let (reg, mut rx) = hub.register(addr(t, "s"), 10).unwrap();
        let (_keeps_up, mut other_rx) = hub.register(addr(t, "s"), 10).unwrap();
        for _ in 0..SEND_QUEUE {
            assert_eq!(hub.deliver(&addr(t, "s"), "x".into()).delivered, 2);
            other_rx.recv().await.unwrap();
        }
        // The first socket read nothing: the next frame evicts it, the other gets it.
        assert_eq!(hub.deliver(&addr(t, "s"), "y".into()), Delivery { delivered: 1, evicted: 1 });
        assert_eq!(&*other_rx.recv().await.unwrap(), "y");
        for _ in 0..SEND_QUEUE {
            assert_eq!(&*rx.recv().await.unwrap(), "x", "what was queued before is still there");
        }
        assert!(rx.recv().await.is_none(), "then the queue ends: the socket task closes it");
        assert_eq!(hub.connections(), 1);
        drop(reg);
        assert_eq!(hub.deliver(&addr(t, "s"), "z".into()), Delivery { delivered: 1, evicted: 0 });
    }

    #[test]
    fn caps_sockets_per_tenant_and_frees_slots() {
        let hub = Arc::new(Hub::default());
        let (t, other) = (TenantId::new(), TenantId::new());
        let first = hub.register(addr(t, "a"), 2).unwrap();
        let _second = hub.register(addr(t, "b"), 2).unwrap();
        assert!(matches!(hub.register(addr(t, "c"), 2), Err(CapReached(2))));
        assert!(hub.register(addr(other, "a"), 2).is_ok(), "another tenant is not affected");
        drop(first);
        assert!(hub.register(addr(t, "c"), 2).is_ok(), "a closed socket frees its slot");
    }
}
