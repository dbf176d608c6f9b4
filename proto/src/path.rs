//! Path rules shared by every component. A SealFS path is absolute, has no
//! empty, `.` or `..` components and no trailing slash (except the root `/`),
//! each component is at most [`NAME_MAX`] bytes, the whole at most
//! [`PATH_MAX`] bytes, and it holds no NUL. Clients normalise what users give;
//! servers refuse anything that is not already in this form.
//!
//! `..` is resolved lexically (SealFS paths have no symlinks in their
//! directory part, since the client does not follow symlinks mid-path yet).

use crate::Errno;

/// Longest name of one component, as on Linux.
pub const NAME_MAX: usize = 255;
/// Longest path, as on Linux (`PATH_MAX` counts the NUL).
pub const PATH_MAX: usize = 4095;

/// Normalises an absolute path: collapses `//`, drops `.`, applies `..`
/// (never above the root) and checks the limits.
pub fn normalize(path: &str) -> Result<String, Errno> {
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    if !path.starts_with('/') {
        return Err(Errno::EINVAL);
    }
    if path.len() > PATH_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => {
                check_name(c)?;
                parts.push(c);
            }
        }
    }
    if parts.is_empty() {
        return Ok("/".to_string());
    }
    let mut out = String::with_capacity(path.len());
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    Ok(out)
}

/// Joins a normalised directory and a relative (or absolute) path, then
/// normalises.
pub fn join(dir: &str, rel: &str) -> Result<String, Errno> {
    if rel.starts_with('/') {
        return normalize(rel);
    }
    if rel.is_empty() {
        return Err(Errno::ENOENT);
    }
    normalize(&format!("{dir}/{rel}"))
}

/// Checks one component: not empty, not `.`/`..`, no `/` or NUL, at most
/// [`NAME_MAX`] bytes.
pub fn check_name(name: &str) -> Result<(), Errno> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Checks that `path` is already normalised (what a server requires).
pub fn check(path: &str) -> Result<(), Errno> {
    match normalize(path) {
        Ok(n) if n == path => Ok(()),
        Ok(_) => Err(Errno::EINVAL),
        Err(e) => Err(e),
    }
}

/// Splits a normalised path into its parent and its last name; `None` for
/// the root.
pub fn split(path: &str) -> Option<(&str, &str)> {
    if path == "/" {
        return None;
    }
    let i = path.rfind('/')?;
    let parent = if i == 0 { "/" } else { &path[..i] };
    Some((parent, &path[i + 1..]))
}

/// Whether `path` is `dir` or lies under it (both normalised).
pub fn is_within(path: &str, dir: &str) -> bool {
    if dir == "/" {
        return true;
    }
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("//a//b/./c/").unwrap(), "/a/b/c");
        assert_eq!(normalize("/a/b/../c").unwrap(), "/a/c");
        assert_eq!(normalize("/../../x").unwrap(), "/x");
        assert_eq!(normalize("/a/..").unwrap(), "/");
        assert_eq!(normalize("a"), Err(Errno::EINVAL));
        assert_eq!(normalize(""), Err(Errno::ENOENT));
        assert_eq!(
            normalize(&format!("/{}", "x".repeat(255))).unwrap().len(),
            256
        );
        assert_eq!(
            normalize(&format!("/{}", "x".repeat(256))),
            Err(Errno::ENAMETOOLONG)
        );
        assert_eq!(normalize(&"/abc".repeat(1100)), Err(Errno::ENAMETOOLONG));
        assert_eq!(normalize("/a\0b"), Err(Errno::EINVAL));
    }

    #[test]
    fn splits_and_checks() {
        assert_eq!(split("/"), None);
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/a/b"), Some(("/a", "b")));
        assert!(check("/a/b").is_ok());
        assert_eq!(check("/a/../b"), Err(Errno::EINVAL));
        assert_eq!(check("/a/"), Err(Errno::EINVAL));
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/x", "/"));
        assert_eq!(join("/a", "../b/c").unwrap(), "/b/c");
        assert_eq!(join("/a", "/z").unwrap(), "/z");
    }

    proptest::proptest! {
        #[test]
        fn normalize_is_idempotent_and_never_escapes(s in "(/|[a-c]{1,3}|\\.|\\.\\.){0,12}") {
            let p = format!("/{s}");
            if let Ok(n) = normalize(&p) {
                proptest::prop_assert!(n.starts_with('/'));
                proptest::prop_assert_eq!(normalize(&n).unwrap(), n.clone());
                proptest::prop_assert!(!n.split('/').any(|c| c == ".." || c == "."));
            }
        }
    }
}
