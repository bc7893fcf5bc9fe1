//! Projects and users.

use kumo_wire::api::{Project, Role, User};
use kumo_wire::{ProjectId, Timestamp, UserId};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{parse_col, Db, DbResult};

/// A user with the password hash, for logging in.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    /// The user.
    pub user: User,
    /// Argon2 PHC string.
    pub password_hash: String,
}

fn project_of(row: &AnyRow) -> DbResult<Project> {
    Ok(Project {
        id: parse_col(row, "id")?,
        name: row.try_get("name")?,
        created_at: Timestamp(row.try_get("created_at")?),
        unique_instance_names: row.try_get::<i64, _>("unique_instance_names")? != 0,
    })
}

fn user_of(row: &AnyRow) -> DbResult<User> {
    Ok(User {
        id: parse_col(row, "id")?,
        name: row.try_get("name")?,
        project_id: parse_col(row, "project_id")?,
        role: parse_col(row, "role")?,
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

impl Db {
    /// Creates a project.
    pub async fn insert_project(&self, name: &str) -> DbResult<Project> {
        let project = Project {
            id: ProjectId::generate(),
            name: name.to_owned(),
            created_at: Timestamp::now(),
            unique_instance_names: false,
        };
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(project.id.as_str())
            .bind(&project.name)
            .bind(project.created_at.millis())
            .execute(self.pool())
            .await?;
        Ok(project)
    }

    /// A project by id or name.
    pub async fn find_project(&self, id_or_name: &str) -> DbResult<Option<Project>> {
        let row = sqlx::query("SELECT * FROM projects WHERE id = $1 OR name = $1")
            .bind(id_or_name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(project_of).transpose()
    }

    /// Sets a project's `unique_instance_names`.
    pub async fn set_unique_instance_names(&self, project: &ProjectId, unique: bool) -> DbResult<()> {
        sqlx::query("UPDATE projects SET unique_instance_names = $2 WHERE id = $1")
            .bind(project.as_str())
            .bind(i64::from(unique))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Every project.
    pub async fn list_projects(&self) -> DbResult<Vec<Project>> {
        let rows = sqlx::query("SELECT * FROM projects ORDER BY name").fetch_all(self.pool()).await?;
        rows.iter().map(project_of).collect()
    }

    /// Creates a user.
    pub async fn insert_user(
        &self,
        name: &str,
        project: &ProjectId,
        role: Role,
        password_hash: &str,
    ) -> DbResult<User> {
        let user = User {
            id: UserId::generate(),
            name: name.to_owned(),
            project_id: project.clone(),
            role,
            created_at: Timestamp::now(),
        };
        sqlx::query(
            "INSERT INTO users (id, project_id, name, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.as_str())
        .bind(project.as_str())
        .bind(name)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(user.created_at.millis())
        .execute(self.pool())
        .await?;
        Ok(user)
    }

    /// A user and password hash by login name.
    pub async fn user_credentials(&self, name: &str) -> DbResult<Option<UserCredentials>> {
        let row = sqlx::query("SELECT * FROM users WHERE name = $1").bind(name).fetch_optional(self.pool()).await?;
        row.map(|r| Ok(UserCredentials { user: user_of(&r)?, password_hash: r.try_get("password_hash")? })).transpose()
    }

    /// A user by id.
    pub async fn user(&self, id: &UserId) -> DbResult<Option<User>> {
        let row =
            sqlx::query("SELECT * FROM users WHERE id = $1").bind(id.as_str()).fetch_optional(self.pool()).await?;
        row.as_ref().map(user_of).transpose()
    }

    /// Revokes a token (by its SHA-256) until `expires_at`, when it would die
    /// anyway; forgets revocations that are past.
    pub async fn revoke_token(&self, token_hash: &str, expires_at: kumo_wire::Timestamp) -> DbResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
            .bind(kumo_wire::Timestamp::now().millis())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO revoked_tokens (token_hash, expires_at) VALUES ($1, $2) ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(token_hash)
        .bind(expires_at.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether the token with this SHA-256 was revoked.
    pub async fn token_revoked(&self, token_hash: &str) -> DbResult<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM revoked_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Every user.
    pub async fn list_users(&self) -> DbResult<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name").fetch_all(self.pool()).await?;
        rows.iter().map(user_of).collect()
    }

    /// How many users exist (0 before bootstrap).
    pub async fn count_users(&self) -> DbResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users").fetch_one(self.pool()).await?;
        Ok(row.try_get("n")?)
    }
}

#[cfg(test)]
mod tests {
    use crate::db::testing::databases;
    use crate::db::DbError;
    use kumo_wire::api::Role;

    #[tokio::test]
    async fn projects_and_users_round_trip_and_names_are_unique() {
        for (db, _guard) in databases().await {
            let p = db.insert_project("acme").await.unwrap();
            assert!(matches!(db.insert_project("acme").await, Err(DbError::Duplicate)));
            assert_eq!(db.find_project("acme").await.unwrap().unwrap().id, p.id);
            assert_eq!(db.find_project(p.id.as_str()).await.unwrap().unwrap().name, "acme");
            let u = db.insert_user("alice", &p.id, Role::Member, "hash").await.unwrap();
            assert!(matches!(db.insert_user("alice", &p.id, Role::Admin, "h").await, Err(DbError::Duplicate)));
            let creds = db.user_credentials("alice").await.unwrap().unwrap();
            assert_eq!(creds.user.id, u.id);
            assert_eq!(creds.password_hash, "hash");
            assert_eq!(db.count_users().await.unwrap(), 1);
            assert_eq!(db.setting_or_insert("k", "v1").await.unwrap(), "v1");
            assert_eq!(db.setting_or_insert("k", "v2").await.unwrap(), "v1");
        }
    }
}
