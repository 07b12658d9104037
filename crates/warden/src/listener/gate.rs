//! How many connections a listener holds, in all and per client IP. A connection over
//! either cap gets a short 503 in OpenAI's envelope and is closed, so a flood of idle
//! sockets cannot take every file descriptor and lock real clients (and health checks)
//! out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub struct Gate {
    name: &'static str,
    max: usize,
    per_ip: usize,
    // A std mutex: held for a map update, never across an await.
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
pub struct Admitted {
    gate: Arc<Gate>,
    ip: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Listener,
    ClientIp,
}

impl Gate {
    pub fn new(name: &'static str, max: usize, per_ip: usize) -> Arc<Gate> {
        Arc::new(Gate {
            name,
            max: max.max(1),
            per_ip: per_ip.max(1),
            open: Mutex::new(Open::default()),
        })
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Full> {
        let Ok(mut open) = self.open.lock() else {
            return Err(Full::Listener);
        };
        if open.total >= self.max {
            return Err(Full::Listener);
        }
        let from_ip = open.by_ip.entry(ip).or_default();
        if *from_ip >= self.per_ip {
            return Err(Full::ClientIp);
        }
        *from_ip += 1;
        open.total += 1;
        Ok(Admitted {
            gate: self.clone(),
            ip,
        })
    }

    pub fn open(&self) -> usize {
        self.open.lock().map_or(0, |o| o.total)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut open) = self.gate.open.lock() {
            open.total = open.total.saturating_sub(1);
            if let Some(n) = open.by_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    open.by_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// Answers a connection the gate refused, without reading it: a 503 the SDKs retry.
pub async fn refuse(mut stream: TcpStream, full: Full) {
    let message = match full {
        Full::Listener => "Warden is at its connection limit; please retry shortly.",
        Full::ClientIp => {
            "Too many open connections from this client address; close idle connections and retry."
        }
    };
    let body = serde_json::json!({"error": {
        "message": message,
        "type": "server_error",
        "param": null,
        "code": "too_many_connections",
    }})
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn caps_in_all_and_per_ip_and_frees_on_drop() {
        let gate = Gate::new("t", 3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Full::ClientIp));
        let _b1 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).err(), Some(Full::Listener));
        drop(a1);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(b).is_ok());
    }
}
