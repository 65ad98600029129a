//! An SMTP server on 127.0.0.1:0 that keeps every mail and can refuse on demand.
//!
//! The protocol side is the `mailin` crate's session state machine (EHLO, AUTH, MAIL, RCPT,
//! DATA, QUIT); only the socket loop is here. `mailin-embedded`, its ready-made server, needs
//! its rustls feature (which pulls aws-lc-rs) for AUTH, and cannot allow AUTH in plain text.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Mutex};

use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder, response};

/// One mail as the server got it.
#[derive(Clone, Debug, Default)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body, as sent.
    pub data: String,
    pub authenticated_as: Option<String>,
}

impl ReceivedMail {
    /// The value of header `name` (unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
    pub fn body(&self) -> String {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Sink {
    mails: Vec<ReceivedMail>,
    /// Reply to RCPT TO instead of 250 (e.g. 550 no such mailbox).
    rcpt_reply: Option<u16>,
    /// Reply at the end of DATA instead of 250 (e.g. 451 try later).
    data_reply: Option<u16>,
    login: Option<(String, String)>,
}

/// A running SMTP server; its thread ends with the test process.
#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    sink: Arc<Mutex<Sink>>,
}

impl SmtpSink {
    /// Starts a server; with `login`, it requires AUTH PLAIN with that user and password.
    pub fn start(login: Option<(&str, &str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = Arc::new(Mutex::new(Sink {
            login: login.map(|(u, p)| (u.to_owned(), p.to_owned())),
            ..Sink::default()
        }));
        let mut session = SessionBuilder::new("sink.test");
        if login.is_some() {
            // No TLS here, so AUTH must be allowed in plain text.
            session
                .enable_auth(AuthMechanism::Plain)
                .insecure_enable_plaintext_auth();
        }
        let shared = Arc::clone(&sink);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = MailHandler {
                    sink: Arc::clone(&shared),
                    current: ReceivedMail::default(),
                    user: None,
                };
                let peer = stream
                    .peer_addr()
                    .map(|a| a.ip())
                    .unwrap_or(IpAddr::from([127, 0, 0, 1]));
                let mut session = session.build(peer, handler);
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    if session.greeting().write_to(&mut writer).is_err() {
                        return;
                    }
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        match reader.read_until(b'\n', &mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let reply = session.process(&line);
                        // mailin stays in DATA after a refused end of data, so the client's
                        // QUIT would be taken as data and never answered: hang up instead.
                        let refused_data = line == b".\r\n" && reply.is_error;
                        if refused_data {
                            let _ = reply.write_to(&mut writer);
                            return;
                        }
                        match reply.action {
                            Action::NoReply => continue,
                            Action::Close => {
                                let _ = reply.write_to(&mut writer);
                                return;
                            }
                            Action::Reply | Action::UpgradeTls => {
                                if reply.write_to(&mut writer).is_err() || writer.flush().is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self { port, sink }
    }

    pub fn refuse_recipients_with(&self, code: u16) {
        self.sink.lock().unwrap().rcpt_reply = Some(code);
    }

    pub fn refuse_data_with(&self, code: u16) {
        self.sink.lock().unwrap().data_reply = Some(code);
    }

    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.sink.lock().unwrap().mails.clone()
    }
}

struct MailHandler {
    sink: Arc<Mutex<Sink>>,
    current: ReceivedMail,
    user: Option<String>,
}

fn reply(code: u16) -> Response {
    Response::custom(code, format!("refused with {code} by the test"))
}

impl Handler for MailHandler {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.current = ReceivedMail {
            from: from.to_owned(),
            authenticated_as: self.user.clone(),
            ..ReceivedMail::default()
        };
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if let Some(code) = self.sink.lock().unwrap().rcpt_reply {
            return reply(code);
        }
        self.current.to.push(to.to_owned());
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.data.push_str(&String::from_utf8_lossy(buf));
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut sink = self.sink.lock().unwrap();
        if let Some(code) = sink.data_reply {
            return reply(code);
        }
        sink.mails.push(std::mem::take(&mut self.current));
        response::OK
    }

    fn auth_plain(&mut self, _authorization_id: &str, user: &str, password: &str) -> Response {
        let sink = self.sink.lock().unwrap();
        match &sink.login {
            Some((u, p)) if u == user && p == password => {
                self.user = Some(user.to_owned());
                response::AUTH_OK
            }
            _ => response::INVALID_CREDENTIALS,
        }
    }
}
