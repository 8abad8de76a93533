//! Team: the store's members and their roles; adding an existing account, changing a
//! member's role, removing a member (or leaving).

use askama::Template;
use axum::{
    Form,
    extract::{Path, Query, State},
    http::{HeaderValue, Method, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use nudge_contracts::control::{AddMemberRequest, ChangeRoleRequest, MemberList, MemberView};
use nudge_tenants::Role;
use serde::Deserialize;

use super::{Layout, id_segment, render};
use crate::{
    Console,
    api::Empty,
    error::ConsoleError,
    session::{Member, SESSION_COOKIE, set_cookie},
};

const ROLES: [&str; 4] = ["viewer", "analyst", "admin", "owner"];

#[derive(Template)]
#[template(path = "team.html")]
struct TeamPage {
    layout: Layout,
    members: Vec<Row>,
    roles: &'static [&'static str],
    email: String,
    role: String,
    errors: Vec<(String, String)>,
    problem: Option<String>,
    /// Why a role change or removal was refused.
    member_problem: Option<String>,
    notice: Option<&'static str>,
}

/// A member as the team page shows them, with what the signed-in member may do to them.
struct Row {
    member: MemberView,
    /// The signed-in member's own row: they may leave.
    me: bool,
    /// The signed-in member's role manages this member's (the API decides in the end).
    manage: bool,
}

/// Whether `actor` manages members of role `other`, by the rules the API applies.
fn manages(actor: &str, other: &str) -> bool {
    matches!((Role::parse(actor), Role::parse(other)), (Some(actor), Some(other)) if actor.manages_member(other))
}

impl TeamPage {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors.iter().find(|(f, _)| f == field).map(|(_, e)| e.as_str())
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AddForm {
    csrf: String,
    email: String,
    role: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Notice {
    done: String,
}

async fn team_page(console: &Console, member: &Member, form: TeamForm) -> Result<Html<String>, ConsoleError> {
    let members: MemberList = console.api.get(&member.store_path("/members"), member.token()).await?;
    render(&TeamPage {
        layout: Layout::new(member, "team"),
        members: members
            .items
            .into_iter()
            .map(|m| Row {
                me: m.account_id == member.session.account_id,
                manage: manages(&member.session.role, &m.role),
                member: m,
            })
            .collect(),
        roles: &ROLES,
        email: form.email,
        role: if form.role.is_empty() { "viewer".into() } else { form.role },
        errors: form.errors,
        problem: form.problem,
        member_problem: form.member_problem,
        notice: form.notice,
    })
}

#[derive(Default)]
struct TeamForm {
    email: String,
    role: String,
    errors: Vec<(String, String)>,
    problem: Option<String>,
    member_problem: Option<String>,
    notice: Option<&'static str>,
}

pub async fn page(
    State(console): State<Console>,
    member: Member,
    Query(notice): Query<Notice>,
) -> Result<Html<String>, ConsoleError> {
    let notice = match notice.done.as_str() {
        "added" => Some("The member is added. They sign in with their own password."),
        "changed" => Some("The member's role is changed; it applies to their next request."),
        "removed" => Some("The member is removed; their sessions in this store have ended."),
        _ => None,
    };
    team_page(&console, &member, TeamForm { notice, ..TeamForm::default() }).await
}

pub async fn add(
    State(console): State<Console>,
    member: Member,
    Form(form): Form<AddForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let request = AddMemberRequest { email: form.email.trim().to_owned(), role: form.role.clone() };
    match console
        .api
        .call::<MemberView>(Method::POST, &member.store_path("/members"), Some(member.token()), Some(&request))
        .await
    {
        Ok(_) => Ok(Redirect::to("/console/team?done=added").into_response()),
        Err(ConsoleError::Refused(r)) if matches!(r.status.as_u16(), 403 | 409 | 422) => {
            let (errors, problem) = if r.fields.is_empty() {
                let problem = match r.code.as_str() {
                    "unknown_account" => {
                        "No account has this e-mail address: the person first creates one at /console/join.".into()
                    }
                    "already_member" => "This person is already a member of the store.".into(),
                    _ => r.message.clone(),
                };
                (Vec::new(), Some(problem))
            } else {
                (r.fields.clone(), None)
            };
            let page = TeamForm { email: form.email, role: form.role, errors, problem, ..TeamForm::default() };
            Ok((r.status, team_page(&console, &member, page).await?).into_response())
        }
        Err(e) => Err(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RoleForm {
    csrf: String,
    role: String,
}

/// Refusals the team page explains in place (the rest are error pages).
fn team_problem(code: &str, message: &str) -> String {
    match code {
        "last_owner" => "The store keeps at least one owner: make another member owner first.".into(),
        "forbidden" => "Your role cannot change this member.".into(),
        _ => message.to_owned(),
    }
}

pub async fn change_role(
    State(console): State<Console>,
    member: Member,
    Path(account_id): Path<String>,
    Form(form): Form<RoleForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let account_id = id_segment(&account_id)?;
    let request = ChangeRoleRequest { role: form.role };
    let path = member.store_path(&format!("/members/{account_id}"));
    match console.api.call::<MemberView>(Method::PATCH, &path, Some(member.token()), Some(&request)).await {
        Ok(_) => Ok(Redirect::to("/console/team?done=changed").into_response()),
        Err(ConsoleError::Refused(r)) if matches!(r.status.as_u16(), 403 | 409 | 422) => {
            let page = TeamForm { member_problem: Some(team_problem(&r.code, &r.message)), ..TeamForm::default() };
            Ok((r.status, team_page(&console, &member, page).await?).into_response())
        }
        Err(e) => Err(e),
    }
}

pub async fn remove(
    State(console): State<Console>,
    member: Member,
    Path(account_id): Path<String>,
    Form(form): Form<super::auth::CsrfForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let account_id = id_segment(&account_id)?;
    let path = member.store_path(&format!("/members/{account_id}"));
    match console.api.call::<Empty>(Method::DELETE, &path, Some(member.token()), None::<&()>).await {
        Ok(_) if account_id == member.session.account_id => {
            // Left the store: this session has nothing more to show (its refresh token
            // stopped working with the membership).
            tracing::info!(tenant_id = %member.session.tenant_id, "member left the store in the console");
            console.sessions.end(&member.id).await?;
            let mut response = Redirect::to("/console/login").into_response();
            let cleared = HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", 0))
                .map_err(|e| ConsoleError::Internal(e.to_string()))?;
            response.headers_mut().append(header::SET_COOKIE, cleared);
            Ok(response)
        }
        Ok(_) => Ok(Redirect::to("/console/team?done=removed").into_response()),
        Err(ConsoleError::Refused(r)) if matches!(r.status.as_u16(), 403 | 409) => {
            let page = TeamForm { member_problem: Some(team_problem(&r.code, &r.message)), ..TeamForm::default() };
            Ok((r.status, team_page(&console, &member, page).await?).into_response())
        }
        Err(e) => Err(e),
    }
}
