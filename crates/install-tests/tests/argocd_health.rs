//! The Argo CD health check documented in docs/argocd-health.md, run in a real Lua 5.4 (Argo CD
//! embeds gopher-lua, a Lua 5.1 dialect; the script uses nothing that differs between them).

use kbeast_install_tests::repo_root;
use mlua::{Lua, LuaSerdeExt};
use serde_json::{Value, json};

/// The Lua body of the documented `resource.customizations.health...` key.
fn documented_script() -> String {
    let doc = std::fs::read_to_string(repo_root().join("docs/argocd-health.md")).expect("doc");
    let start = doc
        .find("resource.customizations.health.kbeast.io_KnowledgeProject: |\n")
        .expect("the key is documented");
    let body = &doc[start..];
    let body = &body[body.find('\n').expect("newline") + 1..];
    let end = body.find("```").expect("code block ends");
    body[..end]
        .lines()
        .map(|line| line.strip_prefix("  ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

fn health(object: &Value) -> (String, String) {
    let lua = Lua::new();
    lua.globals()
        .set("obj", lua.to_value(object).expect("object converts"))
        .expect("global set");
    let result: mlua::Table = lua
        .load(format!(
            "return (function()\n{}\nend)()",
            documented_script()
        ))
        .eval()
        .expect("the script runs");
    (
        result.get::<String>("status").expect("status"),
        result.get::<String>("message").unwrap_or_default(),
    )
}

fn project(generation: i64, observed: Option<i64>, conditions: Value) -> Value {
    let mut status = json!({"conditions": conditions});
    if let Some(observed) = observed {
        status["observedGeneration"] = json!(observed);
    }
    json!({"metadata": {"name": "docs", "generation": generation}, "status": status})
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": format!("{type_} {reason}")})
}

#[test]
fn conditions_map_to_argo_cd_health() {
    let cases = [
        (
            "no status yet",
            json!({"metadata": {"generation": 1}}),
            "Progressing",
        ),
        (
            "ready for the current generation",
            project(
                2,
                Some(2),
                json!([
                    condition("Ready", "True", "Available"),
                    condition("Degraded", "False", "AsExpected")
                ]),
            ),
            "Healthy",
        ),
        (
            "ready, but for an older generation",
            project(3, Some(2), json!([condition("Ready", "True", "Available")])),
            "Progressing",
        ),
        (
            "rolling out",
            project(
                2,
                Some(2),
                json!([
                    condition("Ready", "False", "RollingOut"),
                    condition("Degraded", "False", "AsExpected")
                ]),
            ),
            "Progressing",
        ),
        (
            "rolling out while the previous revision serves",
            project(
                2,
                Some(2),
                json!([
                    condition("Ready", "True", "Available"),
                    condition("Progressing", "True", "RollingOut"),
                    condition("Degraded", "False", "AsExpected")
                ]),
            ),
            "Progressing",
        ),
        (
            "rolled out",
            project(
                2,
                Some(2),
                json!([
                    condition("Ready", "True", "Available"),
                    condition("Progressing", "False", "RolloutComplete"),
                    condition("Degraded", "False", "AsExpected")
                ]),
            ),
            "Healthy",
        ),
        (
            "invalid spec",
            project(
                2,
                Some(2),
                json!([
                    condition("Ready", "False", "InvalidSpec"),
                    condition("Degraded", "True", "InvalidSpec")
                ]),
            ),
            "Degraded",
        ),
        (
            "rollout failed and rolled back",
            project(
                3,
                Some(3),
                json!([
                    condition("Ready", "True", "Available"),
                    condition("Progressing", "False", "RolloutFailed"),
                    condition("Degraded", "True", "RolloutFailed")
                ]),
            ),
            "Degraded",
        ),
        (
            "suspended",
            project(
                2,
                Some(2),
                json!([
                    condition("Suspended", "True", "Suspended"),
                    condition("Ready", "False", "Suspended")
                ]),
            ),
            "Suspended",
        ),
    ];
    for (case, object, expected) in cases {
        let (status, message) = health(&object);
        assert_eq!(status, expected, "{case}: {message}");
    }
}
