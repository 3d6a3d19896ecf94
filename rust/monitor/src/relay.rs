//! The monitor's poll loop: container output to the log and to every attach client, client
//! input to the container's stdin, tty resizes, and the process's exit through its pidfd.
//! One thread, nonblocking fds: neither the container nor the monitor ever waits for a client.

use std::collections::VecDeque;

use libc::c_int;

use crate::jsonlog::JsonLog;
use crate::sys;

/// Output is read (and sent) in chunks of at most this many bytes, after the stream byte.
pub const CHUNK: usize = 32 * 1024;
/// A client further behind than this is dropped.
pub const CLIENT_BUFFER: usize = 1024 * 1024;
/// Client input waiting for the container to read its stdin; past it clients are not read.
const STDIN_BUFFER: usize = 1024 * 1024;

/// How long output may stay open after the process exited.
const LINGER_MS: i64 = 2000;

const KIND_STDIN: u8 = 0;
const KIND_CLOSE: u8 = 1;
const KIND_RESIZE: u8 = 2;

struct Client {
    fd: c_int,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    wrote_stdin: bool,
    dead: bool,
}

impl Client {
    fn send(&mut self, pkt: &[u8]) {
        if self.dead {
            return;
        }
        if self.queue.is_empty() {
            match sys::send_packet(self.fd, pkt) {
                Ok(true) => return,
                Ok(false) => {}
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        self.queued += pkt.len();
        self.queue.push_back(pkt.to_vec());
        if self.queued > CLIENT_BUFFER {
            self.dead = true;
        }
    }

    fn drain(&mut self) {
        while let Some(p) = self.queue.front() {
            match sys::send_packet(self.fd, p) {
                Ok(true) => {
                    self.queued -= p.len();
                    self.queue.pop_front();
                }
                Ok(false) => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }
}

pub struct Relay {
    listen: c_int,
    clients: Vec<Client>,
    /// Open output fds and their stream byte (1 stdout, 2 stderr).
    outputs: Vec<(c_int, u8)>,
    /// The container's stdin (pipe write end, or the pty master), -1 when none or closed.
    stdin: c_int,
    stdin_buf: Vec<u8>,
    stdin_closing: bool,
    stdin_once: bool,
    /// An exec's stdin arrives after its start; what clients send before is kept for it.
    stdin_later: Option<bool>,
    master: c_int,
    pub log: Option<JsonLog>,
    pidfd: c_int,
    pid: i32,
    exited: bool,
}

impl Relay {
    pub fn new(listen: c_int, log: Option<JsonLog>, stdin_once: bool) -> Relay {
        Relay {
            listen,
            clients: Vec::new(),
            outputs: Vec::new(),
            stdin: -1,
            stdin_buf: Vec::new(),
            stdin_closing: false,
            stdin_once,
            stdin_later: None,
            master: -1,
            log,
            pidfd: -1,
            pid: 0,
            exited: false,
        }
    }

    pub fn add_output(&mut self, fd: c_int, stream: u8) {
        sys::set_nonblock(fd);
        self.outputs.push((fd, stream));
    }

    pub fn set_stdin(&mut self, fd: c_int) {
        sys::set_nonblock(fd);
        self.stdin = fd;
        self.stdin_later = None;
        self.write_stdin();
    }

    /// The process gets a stdin once it runs (`tty`: a pty); keep client input until then.
    pub fn expect_stdin(&mut self, tty: bool) {
        self.stdin_later = Some(tty);
    }

    /// A tty: one fd for output, input and resizes.
    pub fn set_master(&mut self, fd: c_int, stdin: bool) {
        self.master = fd;
        self.add_output(fd, 1);
        if stdin {
            self.set_stdin(fd);
        }
    }

    /// Watch `pid` (our child) for its exit without reaping it.
    pub fn watch(&mut self, pid: i32) {
        self.pid = pid;
        self.pidfd = sys::pidfd_open(pid);
    }

    fn exited_now(&self) -> bool {
        // No reaping here: the runtime reaps its own child (and keeps the status).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL,
            )
        };
        r == 0 && unsafe { info.si_pid() } == self.pid
    }

    /// Accept every pending connection, handling what each already sent at once (before any
    /// other client is read again): a resize on a connection of its own takes effect before
    /// stdin that another client sends after it.
    fn accept_all(&mut self, buf: &mut [u8]) {
        while let Some(fd) = sys::accept(self.listen) {
            self.clients.push(Client {
                fd,
                queue: VecDeque::new(),
                queued: 0,
                wrote_stdin: false,
                dead: false,
            });
            let i = self.clients.len() - 1;
            self.client_input(i, buf);
        }
    }

    /// Serve the attach socket (connections, stdin, resizes) until `fd` is readable: the wait
    /// for the daemon's start.
    pub fn serve_until(&mut self, fd: c_int) {
        let mut buf = vec![0u8; CHUNK + 1];
        loop {
            let mut pfds = vec![
                libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.listen,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let want_in = self.stdin_buf.len() < STDIN_BUFFER;
            for c in &self.clients {
                pfds.push(libc::pollfd {
                    fd: c.fd,
                    events: if want_in { libc::POLLIN } else { 0 },
                    revents: 0,
                });
            }
            sys::poll(&mut pfds, -1);
            if pfds[0].revents != 0 {
                break;
            }
            if pfds[1].revents != 0 {
                self.accept_all(&mut buf);
            }
            for i in 0..pfds.len() - 2 {
                if pfds[2 + i].revents != 0 {
                    self.client_input(i, &mut buf);
                }
            }
            self.clients.retain(|c| {
                if c.dead {
                    sys::close(c.fd);
                }
                !c.dead
            });
        }
        // Connections made just before the start get everything from the first byte.
        self.accept_all(&mut buf);
    }

    /// Until the process exited and all its output reached EOF. Output still open
    /// LINGER_MS after the exit belongs to processes that outlived it (no pid namespace of
    /// its own, or an exec's background children): `linger` is called once (the run monitor
    /// kills what is left of the container); if that does not end it either, the rest of the
    /// output is abandoned LINGER_MS later.
    pub fn run(&mut self, linger: &mut dyn FnMut()) {
        let mut buf = vec![0u8; CHUNK + 1];
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        let mut exited_at: Option<i64> = None;
        let mut lingered = false;
        while !(self.exited && self.outputs.is_empty()) {
            if self.exited {
                let since = now_ms() - *exited_at.get_or_insert_with(now_ms);
                if since >= LINGER_MS && !lingered {
                    lingered = true;
                    linger();
                } else if since >= 2 * LINGER_MS {
                    for (fd, stream) in std::mem::take(&mut self.outputs) {
                        if let Some(l) = self.log.as_mut() {
                            l.flush(stream as usize - 1);
                        }
                        if fd != self.master {
                            sys::close(fd);
                        }
                    }
                    break;
                }
            }
            pfds.clear();
            let pf = |fd: c_int, events: libc::c_short| libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            pfds.push(pf(self.listen, libc::POLLIN));
            let no = self.outputs.len();
            for (fd, _) in &self.outputs {
                pfds.push(pf(*fd, libc::POLLIN));
            }
            let want_in = self.stdin_buf.len() < STDIN_BUFFER;
            for c in &self.clients {
                let mut ev = 0;
                if want_in {
                    ev |= libc::POLLIN;
                }
                if !c.queue.is_empty() {
                    ev |= libc::POLLOUT;
                }
                pfds.push(pf(c.fd, ev));
            }
            let stdin_ev = if self.stdin >= 0 && !self.stdin_buf.is_empty() {
                libc::POLLOUT
            } else {
                0
            };
            pfds.push(pf(self.stdin, stdin_ev));
            let watching = !self.exited && self.pidfd >= 0;
            pfds.push(pf(if watching { self.pidfd } else { -1 }, libc::POLLIN));
            // Without pidfds (kernel < 5.3), look at the process now and then.
            let timeout = if !self.exited && self.pidfd < 0 {
                200
            } else if self.exited {
                100
            } else {
                -1
            };
            sys::poll(&mut pfds, timeout);

            // New connections first: what they hold (a resize) goes before stdin that
            // other clients sent after it.
            if pfds[0].revents & libc::POLLIN != 0 {
                self.accept_all(&mut buf);
            }
            let nc = pfds.len() - 3 - no;
            for i in 0..nc {
                let re = pfds[1 + no + i].revents;
                if re & libc::POLLOUT != 0 {
                    self.clients[i].drain();
                }
                if re & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.client_input(i, &mut buf);
                }
            }
            // Output after client input and new clients: a client sees what the container
            // wrote from the moment it connected.
            let mut i = 0;
            let mut k = 0;
            while i < self.outputs.len() {
                let re = pfds[1 + k].revents;
                k += 1;
                if re & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                    && !self.output(i, &mut buf)
                {
                    continue; // removed: the same index now holds the next output
                }
                i += 1;
            }
            let si = pfds.len() - 2;
            if pfds[si].revents != 0 {
                self.write_stdin();
            }
            if watching && pfds[si + 1].revents != 0 || (!self.exited && self.pidfd < 0) {
                self.exited = self.exited_now();
            }
            self.clients.retain(|c| {
                if c.dead {
                    sys::close(c.fd);
                }
                !c.dead
            });
        }
        sys::close(self.pidfd);
        self.pidfd = -1;
    }

    /// Read one chunk of output; false when the stream ended (and was removed).
    fn output(&mut self, i: usize, buf: &mut [u8]) -> bool {
        let (fd, stream) = self.outputs[i];
        match sys::read(fd, &mut buf[1..]) {
            Ok(0) => {
                if let Some(l) = self.log.as_mut() {
                    l.flush(stream as usize - 1);
                }
                self.outputs.remove(i);
                if fd != self.master {
                    sys::close(fd);
                }
                false
            }
            Ok(n) => {
                buf[0] = stream;
                if let Some(l) = self.log.as_mut() {
                    l.write(stream as usize - 1, &buf[1..=n]);
                }
                for c in self.clients.iter_mut() {
                    c.send(&buf[..=n]);
                }
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => true,
            Err(_) => {
                self.outputs.remove(i);
                if fd != self.master {
                    sys::close(fd);
                }
                false
            }
        }
    }

    fn client_input(&mut self, i: usize, buf: &mut [u8]) {
        loop {
            if self.clients[i].dead || self.stdin_buf.len() >= STDIN_BUFFER {
                return;
            }
            let n = match sys::recv_packet(self.clients[i].fd, buf) {
                Ok(None) => return,
                Ok(Some(0)) | Err(_) => {
                    let c = &mut self.clients[i];
                    c.dead = true;
                    if self.stdin_once && c.wrote_stdin {
                        self.close_stdin();
                    }
                    return;
                }
                Ok(Some(n)) => n,
            };
            match buf[0] {
                KIND_STDIN
                    if (self.stdin >= 0 || self.stdin_later.is_some()) && !self.stdin_closing =>
                {
                    self.stdin_buf.extend_from_slice(&buf[1..n]);
                    self.clients[i].wrote_stdin = true;
                    self.write_stdin();
                }
                KIND_CLOSE => self.close_stdin(),
                KIND_RESIZE if self.master >= 0 => {
                    let text = String::from_utf8_lossy(&buf[1..n]);
                    let mut it = text.split_whitespace().map(|x| x.parse::<u16>());
                    if let (Some(Ok(r)), Some(Ok(c))) = (it.next(), it.next()) {
                        sys::set_winsize(self.master, r, c);
                    }
                }
                _ => {}
            }
        }
    }

    /// EOF to the container once what clients sent is written. A pty cannot be half-closed:
    /// there the close is ignored (detaching from `docker run -it` leaves the shell running).
    fn close_stdin(&mut self) {
        if let Some(tty) = self.stdin_later {
            // Closed before the process runs: it gets what was sent, then EOF.
            self.stdin_closing = !tty;
            return;
        }
        if self.stdin < 0 || self.stdin_closing || self.stdin == self.master {
            return;
        }
        self.stdin_closing = true;
        self.write_stdin();
    }

    fn write_stdin(&mut self) {
        while self.stdin >= 0 && !self.stdin_buf.is_empty() {
            let n = unsafe {
                libc::write(
                    self.stdin,
                    self.stdin_buf.as_ptr() as *const libc::c_void,
                    self.stdin_buf.len(),
                )
            };
            if n > 0 {
                self.stdin_buf.drain(..n as usize);
                continue;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return,
                _ => {
                    // The container closed its stdin: what is left can never be read.
                    self.stdin_buf.clear();
                    self.stdin_closing = true;
                }
            }
        }
        if self.stdin_closing && self.stdin_buf.is_empty() && self.stdin >= 0 {
            if self.stdin != self.master {
                sys::close(self.stdin);
            }
            self.stdin = -1;
        }
    }

    /// After the end: give clients what is queued for them (bounded), then close them all.
    pub fn finish(&mut self, grace_ms: i64) {
        let deadline = now_ms() + grace_ms;
        loop {
            self.clients.retain(|c| {
                if c.dead {
                    sys::close(c.fd);
                }
                !c.dead
            });
            let mut pfds: Vec<libc::pollfd> = self
                .clients
                .iter()
                .filter(|c| !c.queue.is_empty())
                .map(|c| libc::pollfd {
                    fd: c.fd,
                    events: libc::POLLOUT,
                    revents: 0,
                })
                .collect();
            let left = deadline - now_ms();
            if pfds.is_empty() || left <= 0 {
                break;
            }
            sys::poll(&mut pfds, left as c_int);
            for c in self.clients.iter_mut() {
                if !c.queue.is_empty() {
                    c.drain();
                }
            }
        }
        for c in self.clients.drain(..) {
            sys::close(c.fd);
        }
        for (fd, _) in self.outputs.drain(..) {
            if fd != self.master {
                sys::close(fd);
            }
        }
        if self.master >= 0 {
            sys::close(self.master);
            self.master = -1;
        }
        if self.stdin >= 0 {
            sys::close(self.stdin);
            self.stdin = -1;
        }
        sys::close(self.listen);
        self.listen = -1;
    }
}

fn now_ms() -> i64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i64 * 1000 + ts.tv_nsec as i64 / 1_000_000
}
