//! Mapping control-plane errors to API errors, in one place.

use nudge_control_plane::{db::DbError, signup::SignupError};
use nudge_platform_http::ApiError;

pub fn db_error(e: DbError) -> ApiError {
    match e {
        DbError::Unavailable(_) => ApiError::unavailable("database_unavailable", "the database is unavailable", 2),
        DbError::Query(ref inner) => ApiError::internal(inner),
    }
}

pub fn signup_error(e: SignupError) -> ApiError {
    match e {
        SignupError::Db(db) => db_error(db),
        SignupError::Keys(ref k) => ApiError::internal(k),
    }
}
