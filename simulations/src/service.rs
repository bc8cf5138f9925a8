//! Where the service lives: the host that subscribers, the publisher and attackers connect
//! to, like a DNS name the harness repoints when the service moves to the second host.

use std::cell::RefCell;
use std::rc::Rc;

/// The current service host; clones share it.
#[derive(Debug, Clone)]
pub struct ServiceAddress(Rc<RefCell<&'static str>>);

impl ServiceAddress {
    /// An address pointing at `host`.
    pub fn new(host: &'static str) -> ServiceAddress {
        ServiceAddress(Rc::new(RefCell::new(host)))
    }

    /// The host to connect to now.
    pub fn host(&self) -> &'static str {
        *self.0.borrow()
    }

    /// Points the address at `host`.
    pub fn set(&self, host: &'static str) {
        *self.0.borrow_mut() = host;
    }
}
