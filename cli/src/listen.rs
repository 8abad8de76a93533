//! `nudge listen`: a shopper's socket in the terminal, to watch interventions arrive
//! without a browser.

use anyhow::Context;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use tokio_util::sync::CancellationToken;

/// Opens `/v1/ws` on `cell` as `shopper` with `key` from `origin` and prints every message.
pub async fn run(
    cell: &str,
    key: &str,
    origin: &str,
    shopper: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let url = format!("{}/v1/ws?key={key}&shopper_id={shopper}", cell.trim_end_matches('/').replacen("http", "ws", 1));
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
            Some(Ok(Message::Text(text))) => println!("{text}"),
            Some(Ok(Message::Close(frame))) => anyhow::bail!("the cell closed the socket: {frame:?}"),
            Some(Ok(_)) => {}
        }
    }
}
