//! An SMTP server on 127.0.0.1:0 that keeps every mail and can refuse on demand.
//!
//! The protocol side is the `mailin` crate's session state machine (EHLO, STARTTLS, AUTH, MAIL,
//! RCPT, DATA, QUIT); only the socket loop and the TLS upgrade (rustls, ring) are here. `mailin-embedded`, its ready-made server, needs
//! its rustls feature (which pulls aws-lc-rs) for AUTH, and cannot allow AUTH in plain text.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Mutex};

use mailin::{Action, AuthMechanism, Handler, Response, Session, SessionBuilder, response};

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
        Self::serve(login, None)
    }

    /// Starts a server that offers STARTTLS with a self-signed certificate for 127.0.0.1, and
    /// returns it with that certificate (PEM) for the client to trust.
    pub fn start_with_starttls(login: Option<(&str, &str)>) -> (Self, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        (
            Self::serve(login, Some(Arc::new(config))),
            certified.cert.pem(),
        )
    }

    fn serve(login: Option<(&str, &str)>, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = Arc::new(Mutex::new(Sink {
            login: login.map(|(u, p)| (u.to_owned(), p.to_owned())),
            ..Sink::default()
        }));
        let mut session = SessionBuilder::new("sink.test");
        if login.is_some() {
            session.enable_auth(AuthMechanism::Plain);
            if tls.is_none() {
                // No TLS here, so AUTH must be allowed in plain text.
                session.insecure_enable_plaintext_auth();
            }
        }
        if tls.is_some() {
            session.enable_start_tls();
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
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let mut plain = BufReader::new(stream);
                    if session.greeting().write_to(plain.get_mut()).is_err() {
                        return;
                    }
                    if converse(&mut plain, &mut session) == Next::UpgradeTls {
                        let (Some(config), tcp) = (tls, plain.into_inner()) else {
                            return;
                        };
                        let connection = rustls::ServerConnection::new(config).unwrap();
                        let mut secure = BufReader::new(rustls::StreamOwned::new(connection, tcp));
                        session.tls_active();
                        converse(&mut secure, &mut session);
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

#[derive(PartialEq, Eq)]
enum Next {
    Closed,
    UpgradeTls,
}

/// Answers the client line by line until it quits, hangs up or asks for TLS.
fn converse<S: Read + Write>(
    stream: &mut BufReader<S>,
    session: &mut Session<MailHandler>,
) -> Next {
    let mut line = Vec::new();
    loop {
        line.clear();
        match stream.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return Next::Closed,
            Ok(_) => {}
        }
        let reply = session.process(&line);
        if reply.action == Action::NoReply {
            continue;
        }
        let written = reply
            .write_to(stream.get_mut())
            .and_then(|()| stream.get_mut().flush());
        // mailin stays in DATA after a refused end of data, so the client's QUIT would be
        // taken as data and never answered: hang up instead.
        let refused_data = line == b".\r\n" && reply.is_error;
        match reply.action {
            _ if written.is_err() || refused_data => return Next::Closed,
            Action::Close => return Next::Closed,
            Action::UpgradeTls => return Next::UpgradeTls,
            Action::Reply | Action::NoReply => {}
        }
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
