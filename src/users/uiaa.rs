//! User-interactive authentication (the spec's UIA): sessions, flows and
//! the stages Hearth offers (`m.login.password`, `m.login.dummy`,
//! `m.login.registration_token`).

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{Method, StatusCode};
use ruma::{
    OwnedUserId, UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
};

use super::Users;
use crate::{Error, Result, util};

/// How long an unfinished session lives.
const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The operation a session authorises: a session started for one request
/// cannot complete another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub method: Method,
    pub path: String,
}

struct Session {
    user_id: Option<OwnedUserId>,
    operation: Operation,
    completed: Vec<AuthType>,
    /// Every stage of a flow is complete. The session stays until it expires,
    /// so a client retrying its last request gets the API's result again.
    done: bool,
    created: Instant,
    /// The registration token this session holds a use of (counted as
    /// pending until the registration completes or the session expires).
    registration_token: Option<String>,
}

/// What one submitted stage came to.
enum Outcome {
    Completed(AuthType),
    /// The registration token stage, completed with a newly held token.
    Reserved(String),
    /// The stage failed; the client may try again (401 with the error).
    Failed(StandardErrorBody),
    /// Nothing to check (a fallback acknowledgement): report progress.
    Nothing,
    /// A hard refusal, outside UIA (403).
    Refused(Error),
}

/// What a request is asked to prove.
pub struct Challenge<'a> {
    pub flows: Vec<Vec<AuthType>>,
    /// The account that must authenticate (`None` during registration).
    pub user_id: Option<&'a UserId>,
    /// The registration token, when the flows contain that stage.
    pub registration_token: Option<&'a str>,
    pub operation: Operation,
}

#[derive(Default)]
pub struct Uiaa {
    sessions: Mutex<Sessions>,
}

/// Unfinished sessions kept at most; past it the oldest goes first. Each
/// unauthenticated `POST /register` starts one, so they must stay bounded.
const MAX_SESSIONS: usize = 10_000;

/// Sessions by ID, and their IDs in the order they were made, so expiry
/// and eviction take the oldest without looking at the others (review §2.4).
#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Session>,
    order: VecDeque<String>,
}

impl Sessions {
    /// Drops expired sessions, and the oldest beyond the cap; returns the
    /// registration tokens they held.
    fn trim(&mut self) -> Vec<String> {
        let mut held = Vec::new();
        while let Some(oldest) = self.order.front() {
            let expired = self.by_id.get(oldest).is_none_or(|s| s.created.elapsed() >= SESSION_LIFETIME);
            if !expired && self.order.len() < MAX_SESSIONS {
                break;
            }
            let oldest = self.order.pop_front().expect("front exists");
            if let Some(token) = self.by_id.remove(&oldest).and_then(|s| s.registration_token) {
                held.push(token);
            }
        }
        held
    }

    /// A new session (after [`Sessions::trim`]).
    fn start(&mut self, challenge: &Challenge<'_>) -> String {
        let id = util::random_string(32);
        self.by_id.insert(
            id.clone(),
            Session {
                user_id: challenge.user_id.map(ToOwned::to_owned),
                operation: challenge.operation.clone(),
                completed: Vec::new(),
                done: false,
                created: Instant::now(),
                registration_token: None,
            },
        );
        self.order.push_back(id.clone());
        id
    }
}

impl Uiaa {
    /// Checks `auth` against the challenge. `Ok(())` once a whole flow is
    /// complete; otherwise the 401 [`Error::Uiaa`] the client needs to go on.
    /// `users` verifies passwords (blocking work: call from a blocking task).
    pub fn check(&self, users: &Users, challenge: &Challenge<'_>, auth: Option<&AuthData>) -> Result<()> {
        let (session_id, held) = {
            let mut sessions = self.sessions.lock().expect("uiaa lock");
            let abandoned = sessions.trim();
            if !abandoned.is_empty() {
                drop(sessions);
                for token in abandoned {
                    users.registration_tokens.release(&token)?;
                }
                sessions = self.sessions.lock().expect("uiaa lock");
            }
            let Some(auth) = auth else {
                let id = sessions.start(challenge);
                return Err(info(challenge, &id, &[], None));
            };
            match auth_session(auth) {
                Some(id) => {
                    let session = sessions.by_id.get(id).ok_or_else(|| {
                        Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Unknown session ID")
                    })?;
                    if session.operation != challenge.operation {
                        return Err(Error::forbidden(
                            "Requested operation has changed during the UI authentication session.",
                        ));
                    }
                    if session.user_id.as_deref() != challenge.user_id {
                        return Err(Error::forbidden("This session belongs to another user."));
                    }
                    if session.done {
                        return Ok(());
                    }
                    (id.to_owned(), session.registration_token.clone())
                }
                None => (sessions.start(challenge), None),
            }
        };

        // Password checks are slow: run the stage without holding the lock.
        let outcome = run_stage(users, challenge, auth.expect("checked above"), held.as_deref());

        let mut sessions = self.sessions.lock().expect("uiaa lock");
        let session = sessions
            .by_id
            .get_mut(&session_id)
            .ok_or_else(|| Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Unknown session ID"))?;
        let stage_error = match outcome {
            Outcome::Reserved(token) => {
                session.registration_token = Some(token);
                session.completed.push(AuthType::RegistrationToken);
                None
            }
            Outcome::Completed(stage) => {
                if !session.completed.contains(&stage) {
                    session.completed.push(stage);
                }
                None
            }
            Outcome::Failed(body) => Some(body),
            Outcome::Nothing => None,
            Outcome::Refused(error) => return Err(error),
        };
        let done =
            challenge.flows.iter().any(|flow| flow.iter().all(|stage| session.completed.contains(stage)));
        if done {
            session.done = true;
            return Ok(());
        }
        let completed = session.completed.clone();
        Err(info(challenge, &session_id, &completed, stage_error))
    }
}

impl Uiaa {
    /// Takes the registration token a completed session holds, for the
    /// registration to count it as used.
    pub fn take_registration_token(&self, session_id: &str) -> Option<String> {
        let mut sessions = self.sessions.lock().expect("uiaa lock");
        sessions.by_id.get_mut(session_id).and_then(|session| session.registration_token.take())
    }
}

pub fn auth_session(auth: &AuthData) -> Option<&str> {
    match auth {
        AuthData::Password(p) => p.session.as_deref(),
        AuthData::Dummy(d) => d.session.as_deref(),
        AuthData::RegistrationToken(t) => t.session.as_deref(),
        AuthData::FallbackAcknowledgement(f) => Some(f.session.as_str()),
        other => other.session(),
    }
}

/// Runs one stage; `held` is the registration token the session holds.
fn run_stage(users: &Users, challenge: &Challenge<'_>, auth: &AuthData, held: Option<&str>) -> Outcome {
    if let AuthData::FallbackAcknowledgement(_) = auth {
        return Outcome::Nothing;
    }
    let offered = |stage: &AuthType| challenge.flows.iter().flatten().any(|s| s == stage);
    let Some(stage) = auth.auth_type().filter(offered) else {
        return Outcome::Failed(StandardErrorBody::new(
            ErrorKind::Unrecognized,
            "Unrecognised or unoffered auth type".into(),
        ));
    };
    match auth {
        AuthData::Dummy(_) => Outcome::Completed(stage),
        AuthData::RegistrationToken(t) => match held {
            Some(held) if held == t.token => Outcome::Completed(stage),
            Some(_) => Outcome::Failed(StandardErrorBody::new(
                ErrorKind::InvalidParam,
                "Registration token has changed".into(),
            )),
            // The configured token is not counted.
            None if challenge.registration_token.is_some_and(|configured| configured == t.token) => {
                Outcome::Completed(stage)
            }
            None => match users.registration_tokens.reserve(&t.token) {
                Ok(true) => Outcome::Reserved(t.token.clone()),
                Ok(false) => Outcome::Failed(StandardErrorBody::new(
                    ErrorKind::Unauthorized,
                    "Invalid registration token".into(),
                )),
                Err(e) => Outcome::Refused(e),
            },
        },
        AuthData::Password(p) => {
            let invalid = || {
                Outcome::Failed(StandardErrorBody::new(
                    ErrorKind::Forbidden,
                    "Invalid username or password".into(),
                ))
            };
            let UserIdentifier::Matrix(id) = &p.identifier else { return invalid() };
            let (Some(named), Some(expected)) = (users.resolve_login_name(&id.user), challenge.user_id)
            else {
                return invalid();
            };
            match users.check_password(&named, &p.password) {
                // Someone else's valid credentials do not authorise this user's request.
                Ok(true) if named != expected => {
                    Outcome::Refused(Error::forbidden("Requester is not the user who authenticated."))
                }
                Ok(true) => Outcome::Completed(stage),
                Ok(false) => invalid(),
                Err(e) => Outcome::Refused(e),
            }
        }
        _ => Outcome::Failed(StandardErrorBody::new(ErrorKind::Unrecognized, "Unsupported auth type".into())),
    }
}

fn info(
    challenge: &Challenge<'_>,
    session: &str,
    completed: &[AuthType],
    error: Option<StandardErrorBody>,
) -> Error {
    let mut info = UiaaInfo::new(challenge.flows.iter().map(|f| AuthFlow::new(f.clone())).collect());
    info.session = Some(session.to_owned());
    info.completed = completed.to_vec();
    info.params = Some(serde_json::value::to_raw_value(&serde_json::json!({})).expect("empty object"));
    info.auth_error = error.map(Box::new);
    Error::Uiaa(Box::new(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_stay_bounded_dropping_the_oldest() {
        let challenge = Challenge {
            flows: vec![vec![AuthType::Dummy]],
            user_id: None,
            registration_token: None,
            operation: Operation { method: Method::POST, path: "/register".into() },
        };
        let mut sessions = Sessions::default();
        let mut ids = Vec::new();
        for _ in 0..MAX_SESSIONS + 10 {
            sessions.trim();
            ids.push(sessions.start(&challenge));
        }
        assert_eq!(sessions.by_id.len(), MAX_SESSIONS);
        assert_eq!(sessions.order.len(), MAX_SESSIONS);
        assert!(!sessions.by_id.contains_key(&ids[0]), "the oldest went first");
        assert!(sessions.by_id.contains_key(ids.last().unwrap()));
        // Sessions expire in the order they were made: from the front.
        let front = sessions.order.front().unwrap().clone();
        sessions.by_id.get_mut(&front).unwrap().created = Instant::now() - SESSION_LIFETIME;
        sessions.trim();
        assert!(!sessions.by_id.contains_key(&front));
        assert_eq!(sessions.by_id.len(), MAX_SESSIONS - 1, "only the expired one is dropped");
    }
}
