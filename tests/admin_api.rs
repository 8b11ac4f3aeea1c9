//! The admin side of `serve`: the admin token (created on first start, private, rotated
//! without a restart), the admin API (`/admin/api/v1/`, 401 without the token, device paths
//! still open), the CLI against a remote server giving the same output as on the local data
//! dir, and `/metrics`.

use crate::harness::Fleet;

fn token_file(f: &Fleet) -> std::path::PathBuf {
    f.data().join("admin-token")
}

#[test]
fn serve_creates_a_private_token_and_says_where_not_what() {
    let f = Fleet::smartcharger();
    assert!(!token_file(&f).exists(), "no token before serve");
    let server = f.serve();
    let token = std::fs::read_to_string(token_file(&f)).unwrap();
    let token = token.trim();
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(token_file(&f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let log = server.log().join("\n");
    assert!(log.contains("admin-token"), "serve says where:\n{log}");
    assert!(!log.contains(token), "the token itself is never logged");
    assert_eq!(f.ok(&["token", "show"]).trim(), token);
    drop(server);

    // A second start keeps the token, and does not announce a creation again.
    let server = f.serve();
    assert_eq!(
        std::fs::read_to_string(token_file(&f)).unwrap().trim(),
        token
    );
    assert_eq!(server.log_count("created the admin token"), 0);
}

#[test]
fn token_show_and_rotate() {
    let f = Fleet::new();
    let first = f.ok(&["token", "show"]);
    let first = first.trim();
    assert_eq!(first.len(), 64);
    assert_eq!(
        f.ok(&["token", "show"]).trim(),
        first,
        "show does not change it"
    );
    let said = f.ok(&["token", "rotate"]);
    assert!(said.contains("admin-token"), "{said}");
    assert!(!said.contains(first));
    let second = f.ok(&["token", "show"]);
    assert_ne!(second.trim(), first);
    assert_eq!(second.trim().len(), 64);
    // A token file that is not a token is an error that says how to fix it, not a panic.
    std::fs::write(token_file(&f), "not a token\n").unwrap();
    let err = f.fails(&["token", "show"]);
    assert!(err.contains("token rotate"), "{err}");
}
