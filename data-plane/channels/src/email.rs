//! The e-mail channel: messages over SMTP (plain on loopback, STARTTLS or implicit TLS
//! elsewhere), with the send's id as the `Message-ID`, so a message sent twice (a crash
//! between the server's acceptance and the send being settled) is recognisably one. Errors
//! carry the server's reply code only, never its text (which may name the recipient).

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Mailbox, MultiPart,
        header::{HeaderName, HeaderValue},
    },
    transport::smtp::authentication::Credentials,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain text: only for a server on loopback (the local run and tests).
    None,
    /// STARTTLS on the submission port (587), required.
    Starttls,
    /// TLS from the first byte (465).
    Tls,
}

/// `[channels.smtp]` in the cell's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// The sender, e.g. `Nudge <no-reply@mail.nudge.example>`.
    pub from: String,
    /// How long one exchange with the server may take.
    pub timeout_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 2525,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "Nudge <no-reply@nudge.localhost>".into(),
            timeout_ms: 10_000,
        }
    }
}

impl SmtpConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.security == SmtpSecurity::None && !matches!(self.host.as_str(), "127.0.0.1" | "localhost" | "::1") {
            return Err("channels.smtp.security = \"none\" only for a server on loopback".into());
        }
        self.from.parse::<Mailbox>().map_err(|e| format!("channels.smtp.from: {e}"))?;
        if self.username.is_some() != self.password.is_some() {
            return Err("channels.smtp: username and password go together".into());
        }
        Ok(())
    }
}

/// Why an e-mail did not go.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// Worth trying again later: the server is away, busy, or said try later (4xx).
    #[error("{0}")]
    Transient(String),
    /// The server refused it for good (5xx), or the address does not parse.
    #[error("{0}")]
    Permanent(String),
}

/// An e-mail to send.
pub struct Email<'a> {
    pub to: &'a str,
    /// The send's id, made the `Message-ID`.
    pub id: &'a str,
    pub subject: &'a str,
    pub html: &'a str,
    pub text: &'a str,
    /// The shopper's unsubscribe link: in the `List-Unsubscribe` header (with one-click
    /// `List-Unsubscribe-Post`) and at the foot of both bodies.
    pub unsubscribe: Option<&'a str>,
}

/// Sends e-mails through one SMTP server (connections pooled).
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl EmailSender {
    pub fn new(config: &SmtpConfig) -> Result<Self, String> {
        config.validate()?;
        let builder = match config.security {
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .map_err(|e| format!("channels.smtp: {e}"))?,
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(|e| format!("channels.smtp: {e}"))?
            }
        };
        let mut builder = builder.port(config.port).timeout(Some(Duration::from_millis(config.timeout_ms)));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose_secret().to_owned()));
        }
        let from = config.from.parse().map_err(|e| format!("channels.smtp.from: {e}"))?;
        Ok(Self { transport: builder.build(), from })
    }

    pub async fn send(&self, email: &Email<'_>) -> Result<(), EmailError> {
        let to: Mailbox = email.to.parse().map_err(|e| EmailError::Permanent(format!("the address: {e}")))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject)
            .message_id(Some(format!("<{}@nudge>", email.id)));
        let (mut text, mut html) = (email.text.to_owned(), email.html.to_owned());
        if let Some(link) = email.unsubscribe {
            let header =
                |name: &'static str, value: String| HeaderValue::new(HeaderName::new_from_ascii_str(name), value);
            builder = builder
                .raw_header(header("List-Unsubscribe", format!("<{link}>")))
                .raw_header(header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".to_owned()));
            text.push_str(&format!("\n\nTo stop these e-mails: {link}\n"));
            // The link is the cell's own (base64url and a signature): nothing to escape.
            html.push_str(&format!("<p style=\"font-size:12px\"><a href=\"{link}\">Unsubscribe</a></p>"));
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| EmailError::Permanent(format!("the message: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            // Only the reply code: a server's text often repeats the recipient's address.
            Err(e) => {
                let what = match e.status() {
                    Some(code) => format!("the server answered {code}"),
                    None if e.is_timeout() => "the server did not answer in time".to_owned(),
                    None => "the server could not be reached".to_owned(),
                };
                Err(if e.is_permanent() { EmailError::Permanent(what) } else { EmailError::Transient(what) })
            }
        }
    }
}
