//! The source a build sends: a directory as a tar file, honouring its
//! `.dockerignore` as `docker build` does, or the tree of a Git ref
//! (`git archive`). Written to a temporary file, so its size is known
//! before the upload and nothing holds it whole in memory.

use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobMatcher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The patterns of a `.dockerignore`: the last one that matches a path (or
/// one of its parent directories) decides, and `!` makes an exception.
pub struct DockerIgnore {
    rules: Vec<(GlobMatcher, bool)>,
}

impl DockerIgnore {
    /// Reads `DIR/.dockerignore` (none: nothing is left out).
    pub fn load(dir: &Path) -> Result<Self> {
        match std::fs::read_to_string(dir.join(".dockerignore")) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self { rules: Vec::new() }),
            Err(e) => Err(e).context("cannot read .dockerignore"),
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keep, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
            let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
            if pattern.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .with_context(|| format!("the .dockerignore pattern `{line}` is not valid"))?;
            rules.push((glob.compile_matcher(), keep));
        }
        Ok(Self { rules })
    }

    /// Whether `rel` (relative to the context, `/`-separated) is left out.
    pub fn excludes(&self, rel: &str) -> bool {
        let mut excluded = false;
        for (glob, keep) in &self.rules {
            let hit = glob.is_match(rel) || ancestors(rel).any(|parent| glob.is_match(parent));
            if hit {
                excluded = !keep;
            }
        }
        excluded
    }

    /// Whether any pattern brings something back (then an excluded
    /// directory must still be walked).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(_, keep)| *keep)
    }
}

/// `a/b/c` → `a/b`, `a`.
fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    rel.rmatch_indices('/').map(move |(i, _)| &rel[..i])
}

/// `DIR` as a tar file in `out`, without what `.dockerignore` leaves out
/// (except the Dockerfile and `.dockerignore` themselves, which the
/// builder needs). Returns how many files went in.
pub fn pack_dir(dir: &Path, dockerfile: &str, out: &Path) -> Result<usize> {
    let ignore = DockerIgnore::load(dir)?;
    let file = std::fs::File::create(out).context("cannot create the context file")?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.follow_symlinks(false);
    let mut files = 0;
    let walk = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let rel = relative(dir, e.path());
            let always = rel == dockerfile || rel == ".dockerignore";
            always || !ignore.excludes(&rel) || (e.file_type().is_dir() && ignore.has_exceptions())
        });
    for entry in walk {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let rel = relative(dir, entry.path());
        if entry.file_type().is_dir() {
            tar.append_dir(&rel, entry.path())
                .with_context(|| format!("cannot add {rel}"))?;
            continue;
        }
        if ignore.excludes(&rel) && rel != dockerfile && rel != ".dockerignore" {
            continue;
        }
        tar.append_path_with_name(entry.path(), &rel)
            .with_context(|| format!("cannot add {rel}"))?;
        files += 1;
    }
    tar.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(files)
}

fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Refuses a Git ref that does not name a commit in the repository at `dir`.
pub fn check_git_ref(dir: &Path, git_ref: &str) -> Result<(), String> {
    let out = git(dir)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("{git_ref}^{{commit}}"))
        .output()
        .map_err(|e| format!("cannot run git: {e}; install git to build a Git ref"))?;
    if out.status.success() {
        return Ok(());
    }
    let in_repo = git(dir)
        .args(["rev-parse", "--git-dir"])
        .output()
        .is_ok_and(|o| o.status.success());
    Err(if in_repo {
        format!("the Git ref `{git_ref}` does not exist in the repository at {}: see `git tag` and `git branch`", dir.display())
    } else {
        format!(
            "{} is not in a Git repository, so --git-ref cannot be used there",
            dir.display()
        )
    })
}

/// Whether `path` exists in the tree of `git_ref`.
pub fn git_has_file(dir: &Path, git_ref: &str, path: &str) -> bool {
    git(dir)
        .args(["cat-file", "-e"])
        .arg(format!("{git_ref}:./{path}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The tree of `git_ref` (the directory `dir` of it) as a tar file in `out`,
/// without what that tree's `.dockerignore` leaves out, as for a directory.
pub fn pack_git(dir: &Path, git_ref: &str, dockerfile: &str, out: &Path) -> Result<()> {
    let ignore = match git(dir)
        .args(["show"])
        .arg(format!("{git_ref}:./.dockerignore"))
        .stderr(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => DockerIgnore::parse(&String::from_utf8_lossy(&o.stdout))?,
        _ => DockerIgnore { rules: Vec::new() },
    };
    let mut child = git(dir)
        .args(["archive", "--format=tar", git_ref])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run git archive")?;
    let stdout = child.stdout.take().context("git archive gave no output")?;
    let file = std::fs::File::create(out).context("cannot create the context file")?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let copied = copy_kept(
        &mut tar::Archive::new(stdout),
        &mut tar,
        &ignore,
        dockerfile,
    );
    // The archive was dropped above, so git cannot be left writing to a
    // pipe nobody reads.
    let status = child.wait().context("git archive did not finish")?;
    copied.with_context(|| format!("cannot repack the tree of {git_ref}"))?;
    anyhow::ensure!(status.success(), "git archive {git_ref} failed ({status})");
    tar.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(())
}

/// Copies the entries of `from` that `ignore` keeps (and always the
/// Dockerfile and `.dockerignore`) into `to`.
fn copy_kept<R: std::io::Read, W: std::io::Write>(
    from: &mut tar::Archive<R>,
    to: &mut tar::Builder<W>,
    ignore: &DockerIgnore,
    dockerfile: &str,
) -> Result<()> {
    for entry in from.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        // `git archive` starts with a global header naming the commit.
        if kind.is_pax_global_extensions() {
            continue;
        }
        let rel = entry
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let always = rel == dockerfile || rel == ".dockerignore";
        if !always && ignore.excludes(&rel) {
            continue;
        }
        let mut header = entry.header().clone();
        if kind.is_symlink() {
            let target = entry.link_name()?.unwrap_or_default().into_owned();
            to.append_link(&mut header, &rel, target)?;
        } else {
            to.append_data(&mut header, &rel, &mut entry)?;
        }
    }
    Ok(())
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir);
    c
}

/// The Dockerfile's path inside `dir`, `/`-separated: `--file` is relative
/// to `dir` (or absolute inside it); refused when it is outside.
pub fn dockerfile_in(dir: &Path, file: Option<&Path>) -> Result<String, String> {
    let Some(file) = file else {
        return Ok("Dockerfile".into());
    };
    let rel: PathBuf = if file.is_absolute() {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let parent = file.parent().and_then(|p| p.canonicalize().ok());
        match (parent, file.file_name()) {
            (Some(p), Some(name)) => match p.join(name).strip_prefix(&dir) {
                Ok(r) => r.to_path_buf(),
                Err(_) => {
                    return Err(format!(
                    "the Dockerfile {} is outside the source directory {}: give a path inside it",
                    file.display(),
                    dir.display()
                ))
                }
            },
            _ => return Err(format!("the Dockerfile {} does not exist", file.display())),
        }
    } else {
        file.to_path_buf()
    };
    let rel = relative(Path::new(""), &rel);
    if rel.is_empty() || rel.split('/').any(|p| p == "..") {
        return Err(format!(
            "the Dockerfile `{}` must be inside the source directory {}",
            file.display(),
            dir.display()
        ));
    }
    Ok(rel.trim_start_matches("./").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_patterns_last_match_wins_and_parents_count() {
        let i = DockerIgnore::parse(
            "# comment\n\ntarget\n*.log\n!keep.log\n/docs/**/*.md\n!docs/README.md\nsecret/\n",
        )
        .unwrap();
        assert!(i.excludes("target"));
        assert!(i.excludes("target/debug/app"), "a parent directory matches");
        assert!(i.excludes("build.log"));
        assert!(!i.excludes("keep.log"));
        assert!(!i.excludes("src/build.log"), "`*` does not cross `/`");
        assert!(i.excludes("docs/a/b/guide.md"));
        assert!(!i.excludes("docs/README.md"));
        assert!(i.excludes("secret/key"));
        assert!(!i.excludes("src/main.rs"));
        assert!(i.has_exceptions());
        assert!(!DockerIgnore::parse("a\n").unwrap().has_exceptions());
    }

    #[test]
    fn packing_leaves_out_what_dockerignore_says() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(d.join(".dockerignore"), "big\n*.tmp\nDockerfile\n").unwrap();
        std::fs::create_dir_all(d.join("big/inner")).unwrap();
        std::fs::write(d.join("big/inner/blob"), "x").unwrap();
        std::fs::write(d.join("a.tmp"), "x").unwrap();
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(d.join("src/main.rs"), "fn main() {}").unwrap();
        let out = tempfile::NamedTempFile::new().unwrap();
        let n = pack_dir(d, "Dockerfile", out.path()).unwrap();
        let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(out.path()).unwrap())
            .entries()
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "src", "src/main.rs"]);
        assert_eq!(n, 3);
    }

    #[test]
    fn a_git_ref_leaves_out_what_its_dockerignore_says() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let ok = git(d)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        run(&["init", "--quiet"]);
        std::fs::write(d.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(d.join(".dockerignore"), ".env\nfixtures\n").unwrap();
        std::fs::write(d.join(".env"), "SECRET=1\n").unwrap();
        std::fs::create_dir_all(d.join("fixtures")).unwrap();
        std::fs::write(d.join("fixtures/big"), "x").unwrap();
        std::fs::write(d.join("main.rs"), "fn main() {}").unwrap();
        run(&["add", "--all"]);
        run(&["commit", "--quiet", "-m", "one"]);
        run(&["tag", "v1"]);
        let out = tempfile::NamedTempFile::new().unwrap();
        pack_git(d, "v1", "Dockerfile", out.path()).unwrap();
        let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(out.path()).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "main.rs"]);
    }

    #[test]
    fn the_dockerfile_must_be_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(dockerfile_in(dir.path(), None).unwrap(), "Dockerfile");
        assert_eq!(
            dockerfile_in(dir.path(), Some(Path::new("./build/Dockerfile.prod"))).unwrap(),
            "build/Dockerfile.prod"
        );
        assert!(dockerfile_in(dir.path(), Some(Path::new("../Dockerfile"))).is_err());
        std::fs::write(dir.path().join("Other"), "").unwrap();
        assert_eq!(
            dockerfile_in(dir.path(), Some(&dir.path().join("Other"))).unwrap(),
            "Other"
        );
        assert!(dockerfile_in(dir.path(), Some(Path::new("/etc/hostname"))).is_err());
    }
}
