//! `mpfleet completions SHELL` and `mpfleet man`: generated from the command line itself, they
//! name every command, bash really completes with the script, and neither touches the store.

use crate::harness::Fleet;
use std::process::Command;

/// Every subcommand, from the command line's own definition, so a new one is checked too.
fn commands() -> Vec<String> {
    use clap::CommandFactory;
    let names: Vec<String> = mpfleet::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    for known in [
        "serve", "module", "device", "group", "rollout", "demo", "man",
    ] {
        assert!(names.iter().any(|n| n == known), "{known} in {names:?}");
    }
    names
}

#[test]
fn completion_scripts_name_every_command() {
    let f = Fleet::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = f.ok(&["completions", shell]);
        let words = ["publish", "bootstrap", "data"].map(String::from);
        for word in commands().iter().chain(&words) {
            assert!(
                script.contains(word),
                "{shell} completions do not mention {word}"
            );
        }
    }
    let err = f.fails(&["completions", "tcsh"]);
    assert!(err.contains("invalid value"), "{err}");
    assert!(!f.data().exists(), "completions created the data directory");
}

/// What bash offers after `mpfleet dev<TAB>` and `mpfleet device <TAB>`, with the script loaded.
#[test]
fn bash_completes_with_the_script() {
    let f = Fleet::new();
    let script = f.file("mpfleet.bash", &f.ok(&["completions", "bash"]));
    let complete = |words: &str| -> String {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}' && COMP_WORDS=({words}) && COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) \
                 && _mpfleet mpfleet \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\" \
                 && echo \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = complete("mpfleet dev");
    assert_eq!(first.split_whitespace().collect::<Vec<_>>(), ["device"]);
    let second = complete("mpfleet device ''");
    for sub in ["set", "list", "show", "rm", "bootstrap", "key"] {
        assert!(
            second.split_whitespace().any(|w| w == sub),
            "`mpfleet device <TAB>` offers {second:?}, not {sub}"
        );
    }
}

#[test]
fn man_page_names_every_command() {
    let f = Fleet::new();
    let page = f.ok(&["man"]);
    assert!(page.contains(".TH mpfleet 1"), "not a man page:\n{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for c in commands() {
        assert!(
            page.contains(&format!("mpfleet\\-{c}(1)")),
            "the page does not name {c}:\n{page}"
        );
    }
    assert!(!f.data().exists(), "man created the data directory");
}

#[test]
fn man_dir_writes_a_page_per_command() {
    let f = Fleet::new();
    let dir = f.dir.path().join("man1");
    f.ok(&["man", "--dir", dir.to_str().unwrap()]);
    for page in [
        "mpfleet.1",
        "mpfleet-serve.1",
        "mpfleet-device-set.1",
        "mpfleet-device-bootstrap.1",
        "mpfleet-module-publish.1",
        "mpfleet-completions.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    let set = std::fs::read_to_string(dir.join("mpfleet-device-set.1")).unwrap();
    assert!(set.contains("MODULE=VERSION"), "{set}");
}
