//! `nudge listen`: a shopper's socket in the terminal, to watch interventions arrive
//! without a browser.

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use nudge_contracts::{
    ingest::{SessionIssued, SessionRequest},
    push::{ClientMessage, PushMessage},
};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use tokio_util::sync::CancellationToken;

/// Gets a session token for `shopper` from `cell`, opens `/v1/ws` with it from `origin`, and
/// prints every message, acknowledging each intervention as the snippet does.
pub async fn run(
    cell: &str,
    key: &str,
    origin: &str,
    shopper: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let cell = cell.trim_end_matches('/');
    let response = reqwest::Client::new()
        .post(format!("{cell}/v1/sessions"))
        .bearer_auth(key)
        .header("Origin", origin)
        .json(&SessionRequest { shopper_id: shopper.to_owned() })
        .send()
        .await
        .context("asking the cell for a session token")?;
    if !response.status().is_success() {
        anyhow::bail!(
            "the cell refused a session token: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let session: SessionIssued = response.json().await?;
    let url = format!("{}/v1/ws?key={key}&token={}", cell.replacen("http", "ws", 1), session.token);
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Origin", HeaderValue::from_str(origin)?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.context("opening the shopper socket")?;
    eprintln!("listening as shopper {shopper}; Ctrl-C stops");
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            f = ws.next() => f,
        };
        match frame {
            None => anyhow::bail!("the cell closed the socket"),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(text))) => {
                println!("{text}");
                if let Ok(PushMessage::Intervention(iv)) = serde_json::from_str::<PushMessage>(&text) {
                    let ack = serde_json::to_string(&ClientMessage::Ack { intervention_id: iv.intervention_id })?;
                    ws.send(Message::Text(ack.into())).await?;
                }
            }
            Some(Ok(Message::Close(frame))) => anyhow::bail!("the cell closed the socket: {frame:?}"),
            Some(Ok(_)) => {}
        }
    }
}
