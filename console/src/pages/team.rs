//! Team: the store's members and their roles; adding an existing account.

use askama::Template;
use axum::{
    Form,
    extract::{Query, State},
    http::Method,
    response::{Html, IntoResponse, Redirect, Response},
};
use nudge_contracts::control::{AddMemberRequest, MemberList, MemberView};
use serde::Deserialize;

use super::{Layout, render};
use crate::{Console, error::ConsoleError, session::Member};

const ROLES: [&str; 4] = ["viewer", "analyst", "admin", "owner"];

#[derive(Template)]
#[template(path = "team.html")]
struct TeamPage {
    layout: Layout,
    members: Vec<MemberView>,
    roles: &'static [&'static str],
    email: String,
    role: String,
    errors: Vec<(String, String)>,
    problem: Option<String>,
    notice: Option<&'static str>,
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
        members: members.items,
        roles: &ROLES,
        email: form.email,
        role: if form.role.is_empty() { "viewer".into() } else { form.role },
        errors: form.errors,
        problem: form.problem,
        notice: form.notice,
    })
}

#[derive(Default)]
struct TeamForm {
    email: String,
    role: String,
    errors: Vec<(String, String)>,
    problem: Option<String>,
    notice: Option<&'static str>,
}

pub async fn page(
    State(console): State<Console>,
    member: Member,
    Query(notice): Query<Notice>,
) -> Result<Html<String>, ConsoleError> {
    let notice = (notice.done == "added").then_some("The member is added. They sign in with their own password.");
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
            let page = TeamForm { email: form.email, role: form.role, errors, problem, notice: None };
            Ok((r.status, team_page(&console, &member, page).await?).into_response())
        }
        Err(e) => Err(e),
    }
}
