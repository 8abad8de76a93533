//! Campaigns: the store's campaigns and their states; an editor for new and saved ones.
//!
//! The editor has two forms of one campaign. The guided form covers the common campaign: a
//! trigger, a condition, and one on-site message to every treated shopper. Any campaign
//! (several variants, e-mails, webhooks, discounts, caps) can be edited as its JSON
//! definition, exactly as the API takes it. Either way the API validates, and its problems
//! (each named by its field, with the character position inside a condition or template)
//! are shown beside the form as it was sent.

use askama::Template;
use axum::{
    Form,
    extract::{Path, Query, State},
    http::{Method, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Layout, id_segment, render, short_time};
use crate::{Console, error::ConsoleError, session::Member};

/// Triggers, with what each asks for.
const TRIGGERS: [(&str, &str); 6] = [
    ("exit_intent", "Exit intent: about to leave with items in the cart"),
    ("cart_idle", "Idle cart: no activity for some minutes"),
    ("checkout_abandoned", "Abandoned checkout: not completed within some minutes"),
    ("high_abandonment", "High abandonment probability, above a threshold"),
    ("page_view", "Page view (optionally under a path)"),
    ("product_view", "Product view"),
];

const KINDS: [&str; 4] = ["reminder", "message", "free_shipping_banner", "discount_code"];

/// The editor's fields, as posted or as read from a saved campaign.
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct EditorForm {
    csrf: String,
    /// `form` or `json`.
    mode: String,
    /// The version the edit replaces (empty for a new campaign).
    version: String,
    name: String,
    trigger: String,
    minutes: String,
    threshold: String,
    path_prefix: String,
    condition: String,
    priority: String,
    control_percent: String,
    kind: String,
    title: String,
    body: String,
    spec: String,
}

/// One problem, by field.
struct Problem {
    field: String,
    message: String,
}

#[derive(Template)]
#[template(path = "campaign_edit.html")]
struct EditorPage {
    layout: Layout,
    /// `None` for a new campaign.
    campaign_id: Option<String>,
    state: String,
    form: EditorForm,
    problems: Vec<Problem>,
    triggers: &'static [(&'static str, &'static str)],
    kinds: &'static [&'static str],
    versions: Vec<(i64, String, String)>,
    notice: Option<&'static str>,
    can_edit: bool,
    /// After a conflicting save: the definition saved meanwhile, to compare with.
    newer_spec: Option<String>,
}

impl EditorPage {
    fn json_mode(&self) -> bool {
        self.form.mode == "json"
    }
}

struct Row {
    id: String,
    name: String,
    state: String,
    version: i64,
    trigger: String,
    updated: String,
}

#[derive(Template)]
#[template(path = "campaigns.html")]
struct ListPage {
    layout: Layout,
    campaigns: Vec<Row>,
    notice: Option<&'static str>,
    can_edit: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Notice {
    done: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MoveForm {
    csrf: String,
    state: String,
}

fn notice(done: &str) -> Option<&'static str> {
    match done {
        "created" => Some("The campaign is saved as a draft. Activate it to start."),
        "saved" => Some("Saved as a new version. Cells use it within seconds."),
        "active" => Some("The campaign is active: cells apply it within seconds."),
        "paused" => Some("The campaign is paused."),
        "archived" => Some("The campaign is archived."),
        _ => None,
    }
}

fn can_edit(member: &Member) -> bool {
    matches!(member.session.role.as_str(), "owner" | "admin")
}

pub async fn list(
    State(console): State<Console>,
    member: Member,
    Query(done): Query<Notice>,
) -> Result<Html<String>, ConsoleError> {
    let answer: Value = console.api.get(&member.store_path("/campaigns"), member.token()).await?;
    let campaigns = answer["campaigns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Row {
            id: c["campaign_id"].as_str().unwrap_or_default().to_owned(),
            name: c["spec"]["name"].as_str().unwrap_or_default().to_owned(),
            state: c["state"].as_str().unwrap_or_default().to_owned(),
            version: c["version"].as_i64().unwrap_or_default(),
            trigger: c["spec"]["trigger"]["type"].as_str().unwrap_or_default().replace('_', " "),
            updated: short_time(c["updated_at"].as_str().unwrap_or_default()),
        })
        .collect();
    render(&ListPage {
        layout: Layout::new(&member, "campaigns"),
        campaigns,
        notice: notice(&done.done),
        can_edit: can_edit(&member),
    })
}

/// The guided form's fields for a saved definition, or `None` when the guided form cannot
/// show all of it: only a definition the form would send back unchanged is edited there (a
/// variant named otherwise, a discount, a cap, a second message all keep the JSON editor).
fn guided(spec: &Value) -> Option<EditorForm> {
    let [variant] = spec["variants"].as_array()?.as_slice() else { return None };
    let [message] = variant["messages"].as_array()?.as_slice() else { return None };
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let trigger = &spec["trigger"];
    let form = EditorForm {
        mode: "form".into(),
        name: text(&spec["name"]),
        trigger: text(&trigger["type"]),
        minutes: text(&trigger["minutes"]),
        threshold: text(&trigger["threshold"]),
        path_prefix: text(&trigger["path_prefix"]),
        condition: text(&spec["condition"]),
        priority: text(&spec["priority"]),
        control_percent: text(&spec["control_percent"]),
        kind: text(&message["kind"]),
        title: text(&message["title"]),
        body: text(&message["body"]),
        ..EditorForm::default()
    };
    let mut saved = spec.clone();
    if let Some(fields) = saved.as_object_mut()
        && fields.get("transactional") == Some(&json!(false))
    {
        fields.remove("transactional");
    }
    (spec_of(&form).ok()? == saved).then_some(form)
}

/// The definition the form describes, or the problems found before asking the API.
fn spec_of(form: &EditorForm) -> Result<Value, Vec<Problem>> {
    let problem = |field: &str, message: &str| Problem { field: field.into(), message: message.into() };
    if form.mode == "json" {
        return serde_json::from_str(&form.spec)
            .map_err(|e| vec![problem("definition", &format!("not valid JSON: {e}"))]);
    }
    let mut problems = Vec::new();
    fn number(problems: &mut Vec<Problem>, field: &str, raw: &str, default: Option<u64>, what: &str) -> Option<Value> {
        let raw = raw.trim();
        if raw.is_empty() {
            return default.map(Value::from);
        }
        match raw.parse::<u64>() {
            Ok(n) => Some(Value::from(n)),
            Err(_) => {
                problems.push(Problem { field: field.into(), message: what.into() });
                None
            }
        }
    }
    let mut trigger = json!({ "type": form.trigger });
    match form.trigger.as_str() {
        "cart_idle" | "checkout_abandoned" => {
            trigger["minutes"] =
                number(&mut problems, "trigger.minutes", &form.minutes, None, "a whole number of minutes, 1 to 1440")
                    .unwrap_or(Value::Null);
        }
        "high_abandonment" => match form.threshold.trim().parse::<f64>() {
            Ok(t) => trigger["threshold"] = json!(t),
            Err(_) => problems.push(problem("trigger.threshold", "a probability between 0 and 1, such as 0.7")),
        },
        "page_view" if !form.path_prefix.trim().is_empty() => trigger["path_prefix"] = json!(form.path_prefix.trim()),
        _ => {}
    }
    let priority = number(&mut problems, "priority", &form.priority, Some(0), "a whole number from 0 to 1000");
    let control =
        number(&mut problems, "control_percent", &form.control_percent, Some(10), "a whole number from 0 to 50");
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut spec = json!({
        "name": form.name.trim(),
        "trigger": trigger,
        "priority": priority,
        "control_percent": control,
        "variants": [{ "name": "main", "weight": 100, "messages": [
            { "channel": "on_site", "kind": form.kind, "title": form.title, "body": form.body }
        ]}],
    });
    if !form.condition.trim().is_empty() {
        spec["condition"] = json!(form.condition.trim());
    }
    Ok(spec)
}

/// The API's problems with a definition.
fn api_problems(body: &Value) -> Vec<Problem> {
    body["error"]["details"]["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let at = p["position"].as_u64().map(|n| format!(" (at character {})", n + 1)).unwrap_or_default();
            Problem {
                field: p["field"].as_str().filter(|f| !f.is_empty()).unwrap_or("definition").to_owned(),
                message: format!("{}{at}", p["message"].as_str().unwrap_or_default()),
            }
        })
        .collect()
}

/// The JSON editor's starting point for a new campaign.
fn skeleton() -> String {
    serde_json::to_string_pretty(&json!({
        "name": "", "trigger": { "type": "exit_intent" }, "variants": [
            { "name": "main", "weight": 100, "messages": [
                { "channel": "on_site", "kind": "reminder", "title": "", "body": "" }]}]
    }))
    .unwrap_or_default()
}

pub async fn new(State(_console): State<Console>, member: Member) -> Result<Html<String>, ConsoleError> {
    let form = EditorForm {
        mode: "form".into(),
        trigger: "exit_intent".into(),
        kind: "reminder".into(),
        priority: "0".into(),
        control_percent: "10".into(),
        spec: skeleton(),
        ..EditorForm::default()
    };
    render(&editor_page(&member, None, String::new(), form, Vec::new(), Vec::new(), None))
}

fn editor_page(
    member: &Member,
    campaign_id: Option<String>,
    state: String,
    form: EditorForm,
    problems: Vec<Problem>,
    versions: Vec<(i64, String, String)>,
    notice: Option<&'static str>,
) -> EditorPage {
    EditorPage {
        layout: Layout::new(member, "campaigns"),
        campaign_id,
        state,
        form,
        problems,
        triggers: &TRIGGERS,
        kinds: &KINDS,
        versions,
        notice,
        can_edit: can_edit(member),
        newer_spec: None,
    }
}

/// Creates (no id) or saves a campaign from the editor.
async fn submit(
    console: &Console,
    member: &Member,
    id: Option<&str>,
    form: EditorForm,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let spec = match spec_of(&form) {
        Ok(spec) => spec,
        Err(problems) => {
            return shown_again(console, member, id, form, problems, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let (method, path, if_match) = match id {
        None => (Method::POST, member.store_path("/campaigns"), None),
        Some(id) => {
            (Method::PUT, member.store_path(&format!("/campaigns/{id}")), Some(format!("\"{}\"", form.version)))
        }
    };
    let (status, body, retry_after) =
        console.api.send_with(method, &path, Some(member.token()), Some(spec), if_match.as_deref()).await?;
    if status.is_success() {
        let saved = body["campaign_id"].as_str().unwrap_or_default();
        tracing::info!(tenant_id = %member.session.tenant_id, campaign_id = saved, "campaign saved in the console");
        let done = if id.is_none() { "created" } else { "saved" };
        return Ok(Redirect::to(&format!("/console/campaigns/{saved}?done={done}")).into_response());
    }
    match status.as_u16() {
        422 | 400 => {
            let problems = api_problems(&body).into_iter().chain(plain_problem(&body)).collect();
            shown_again(console, member, id, form, problems, status).await
        }
        409 | 412 => shown_again(console, member, id, form, plain_problem(&body).into_iter().collect(), status).await,
        _ => Err(crate::api::refusal(status, &body, retry_after, Some(member.token()))),
    }
}

/// The editor again after a refused save: what the member sent, with the problems, beside
/// the campaign as it now is (its state, versions, and current version, so that after
/// someone else's save the member can review and send again).
async fn shown_again(
    console: &Console,
    member: &Member,
    id: Option<&str>,
    mut form: EditorForm,
    problems: Vec<Problem>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let (mut state, mut versions, mut saved_spec) = (String::new(), Vec::new(), None);
    if let Some(id) = id {
        let (campaign, history) = current(console, member, id).await?;
        state = campaign["state"].as_str().unwrap_or_default().to_owned();
        let now = campaign["version"].as_i64().unwrap_or_default().to_string();
        if status == StatusCode::PRECONDITION_FAILED && now != form.version {
            form.version = now;
        }
        versions = history;
        saved_spec = serde_json::to_string_pretty(&campaign["spec"]).ok();
    }
    let saved_spec_copy = saved_spec.clone();
    if form.mode != "json" {
        // The JSON editor shows what the guided form sent, or when that was not a definition
        // yet, the saved one.
        form.spec = spec_of(&form)
            .ok()
            .and_then(|s| serde_json::to_string_pretty(&s).ok())
            .or(saved_spec)
            .unwrap_or_else(skeleton);
    }
    let conflict = status == StatusCode::PRECONDITION_FAILED;
    let notice = conflict.then_some(
        "Someone saved a newer version meanwhile (shown below). Your changes are in the editor: compare, then save again.",
    );
    let mut page = editor_page(member, id.map(str::to_owned), state, form, problems, versions, notice);
    if conflict {
        page.newer_spec = saved_spec_copy;
    }
    let page = render(&page)?;
    Ok((status, page).into_response())
}

/// A saved campaign and its versions (number, by whom, when).
async fn current(
    console: &Console,
    member: &Member,
    id: &str,
) -> Result<(Value, Vec<(i64, String, String)>), ConsoleError> {
    let (path, versions_path) =
        (member.store_path(&format!("/campaigns/{id}")), member.store_path(&format!("/campaigns/{id}/versions")));
    let (campaign, versions) = tokio::join!(
        console.api.get::<Value>(&path, member.token()),
        console.api.get::<Value>(&versions_path, member.token()),
    );
    let versions = versions?["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["version"].as_i64().unwrap_or_default(),
                v["saved_by"].as_str().unwrap_or_default().to_owned(),
                short_time(v["saved_at"].as_str().unwrap_or_default()),
            )
        })
        .collect();
    Ok((campaign?, versions))
}

/// An error without per-field problems, as one problem.
fn plain_problem(body: &Value) -> Option<Problem> {
    let error = &body["error"];
    error["details"]["problems"].is_null().then(|| Problem {
        field: error["code"].as_str().unwrap_or("error").to_owned(),
        message: error["message"].as_str().unwrap_or("the campaign was refused").to_owned(),
    })
}

pub async fn create(
    State(console): State<Console>,
    member: Member,
    Form(form): Form<EditorForm>,
) -> Result<Response, ConsoleError> {
    submit(&console, &member, None, form).await
}

pub async fn save(
    State(console): State<Console>,
    member: Member,
    Path(id): Path<String>,
    Form(form): Form<EditorForm>,
) -> Result<Response, ConsoleError> {
    let id = id_segment(&id)?.to_owned();
    submit(&console, &member, Some(&id), form).await
}

pub async fn show(
    State(console): State<Console>,
    member: Member,
    Path(id): Path<String>,
    Query(done): Query<Notice>,
) -> Result<Html<String>, ConsoleError> {
    let id = id_segment(&id)?;
    let (campaign, versions) = current(&console, &member, id).await?;
    let spec = &campaign["spec"];
    let pretty = serde_json::to_string_pretty(spec).map_err(|e| ConsoleError::Internal(e.to_string()))?;
    let mut form = guided(spec).unwrap_or(EditorForm { mode: "json".into(), ..EditorForm::default() });
    form.spec = pretty;
    form.version = campaign["version"].as_i64().unwrap_or_default().to_string();
    render(&editor_page(
        &member,
        Some(id.to_owned()),
        campaign["state"].as_str().unwrap_or_default().to_owned(),
        form,
        Vec::new(),
        versions,
        notice(&done.done),
    ))
}

pub async fn move_to(
    State(console): State<Console>,
    member: Member,
    Path(id): Path<String>,
    Form(form): Form<MoveForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let id = id_segment(&id)?;
    let moved: Value = console
        .api
        .call(
            Method::POST,
            &member.store_path(&format!("/campaigns/{id}/state")),
            Some(member.token()),
            Some(&json!({ "state": form.state })),
        )
        .await?;
    let state = moved["state"].as_str().unwrap_or_default();
    tracing::info!(tenant_id = %member.session.tenant_id, campaign_id = id, state, "campaign moved in the console");
    Ok(Redirect::to(&format!("/console/campaigns/{id}?done={state}")).into_response())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::guided;

    fn simple() -> serde_json::Value {
        json!({
            "name": "Come back", "trigger": { "type": "cart_idle", "minutes": 20 },
            "condition": "cart_value >= 50", "priority": 5, "control_percent": 10, "transactional": false,
            "variants": [{ "name": "main", "weight": 100, "messages": [
                { "channel": "on_site", "kind": "reminder", "title": "Still there?", "body": "Your cart waits" }]}]
        })
    }

    #[test]
    fn the_guided_form_edits_only_what_it_sends_back_unchanged() {
        let form = guided(&simple()).expect("a simple campaign is guided");
        assert_eq!((form.trigger.as_str(), form.minutes.as_str()), ("cart_idle", "20"));
        let mut renamed = simple();
        renamed["variants"][0]["name"] = json!("spring");
        assert!(guided(&renamed).is_none(), "the variant's name would be lost");
        let mut discount = simple();
        discount["variants"][0]["messages"][0]["discount"] =
            json!({ "percent": 10, "code": "X", "margin_percent": 30 });
        assert!(guided(&discount).is_none(), "the discount would be lost");
        let mut transactional = simple();
        transactional["transactional"] = json!(true);
        assert!(guided(&transactional).is_none());
        let mut capped = simple();
        capped["frequency_cap"] = json!({ "max": 1, "per_hours": 24 });
        assert!(guided(&capped).is_none());
    }
}
