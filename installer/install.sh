#!/usr/bin/env bash
# Sensiscope workstation installer for Linux and macOS (installer/README.md tells the whole story).
#
# Creates the application's own virtual environment, picks the torch build for this machine,
# installs Sensiscope into it, writes a `sensiscope` command (and on Linux a desktop entry with
# the icon), records every path it created in a manifest, and ends with `sensiscope --self-check`.
# `--uninstall` removes exactly what the manifest lists.
#
# Written for bash 3.2 as well (macOS's /bin/bash): no associative arrays, no mapfile, and empty
# arrays are expanded as ${a[@]+"${a[@]}"} because `set -u` rejects "${a[@]}" there.
set -euo pipefail

readonly MANIFEST_NAME="install-manifest.txt"
readonly MANIFEST_HEADER="# sensiscope install manifest v1"
readonly TORCH_INDEX_BASE="https://download.pytorch.org/whl"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
SCRIPT_PATH="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
readonly SCRIPT_PATH

usage() {
    cat <<'EOF'
Usage: install.sh [options]
       install.sh --uninstall [--prefix DIR]

Installs Sensiscope into its own virtual environment with a `sensiscope` command
(~/.local/bin/sensiscope) and, on Linux, a desktop entry with the icon.

Options:
  --prefix DIR            application folder (default: ${XDG_DATA_HOME:-~/.local/share}/sensiscope
                          on Linux, ~/Library/Application Support/Sensiscope on macOS);
                          the environment goes in DIR/venv, the manifest in DIR/install-manifest.txt
  --python PY             interpreter for the environment (default: python3), 3.10 or newer
  --torch auto|cpu|cuda|skip
                          torch build (default auto: CUDA when nvidia-smi sees a GPU, the default
                          macOS wheel (MPS) on Apple silicon, CPU otherwise); skip: no torch-specific
                          index, pip takes torch from its configured index or keeps one already present
  --torch-index URL       extra package index for torch instead of the build's default
                          (CPU on Linux: https://download.pytorch.org/whl/cpu)
  --wheel FILE            install this Sensiscope wheel (default: build one from the source tree)
  --source DIR            source tree to build from (default: the tree this script lives in)
  --find-links DIR        also look for packages in DIR (a local wheel cache); repeatable
  --system-site-packages  let the environment see the packages of --python's installation
                          (a real interpreter, not a venv's: a venv shares its base's packages)
  --reuse-site-packages DIR
                          developer/testing option: make the packages in DIR (for example a dev
                          venv's site-packages) visible through a .pth file, so that torch is not
                          copied again; Sensiscope itself is still installed into the environment
  --dry-run               print what would be done and change nothing
  --uninstall             remove what the manifest in the application folder lists, nothing else
  -h, --help              this help
EOF
}

# Each step is printed with the seconds since the start.
say() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf '\nERROR: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- options

PREFIX=""
PYTHON_ARG=""
TORCH="auto"
TORCH_INDEX=""
WHEEL=""
SOURCE_DIR=""
SYSTEM_SITE=0
DRY_RUN=0
UNINSTALL=0
FIND_LINKS=()
REUSE_SITE=()

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) need_value "$@"; PREFIX="$2"; shift 2 ;;
        --python) need_value "$@"; PYTHON_ARG="$2"; shift 2 ;;
        --torch) need_value "$@"; TORCH="$2"; shift 2 ;;
        --torch-index) need_value "$@"; TORCH_INDEX="$2"; shift 2 ;;
        --wheel) need_value "$@"; WHEEL="$2"; shift 2 ;;
        --source) need_value "$@"; SOURCE_DIR="$2"; shift 2 ;;
        --find-links) need_value "$@"; FIND_LINKS+=("$2"); shift 2 ;;
        --reuse-site-packages) need_value "$@"; REUSE_SITE+=("$2"); shift 2 ;;
        --system-site-packages) SYSTEM_SITE=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

case "$TORCH" in
    auto | cpu | cuda | skip) ;;
    *) die "--torch takes auto, cpu, cuda or skip, not '$TORCH'" ;;
esac
if [[ -n "$WHEEL" && -n "$SOURCE_DIR" ]]; then
    die "give --wheel or --source, not both"
fi

# ---------------------------------------------------------------- paths

# Paths go into a tab-separated manifest and a desktop entry: refuse the characters that would break them.
check_path_chars() {
    case "$2" in
        *$'\n'* | *$'\t'* | *$'\r'*) die "$1 contains a newline or tab, which this installer does not handle: $2" ;;
    esac
}

# An absolute, normalised path (no ".", "..", "//" or trailing "/"; links are kept as given);
# the path need not exist.
absolute() {
    local path="$1" part result="" parts=()
    check_path_chars "a path" "$path"
    [[ "$path" == /* ]] || path="$PWD/$path"
    IFS=/ read -r -a parts <<<"$path"
    for part in ${parts[@]+"${parts[@]}"}; do
        case "$part" in
            "" | .) ;;
            ..) result="${result%/*}" ;;
            *) result="$result/$part" ;;
        esac
    done
    printf '%s\n' "${result:-/}"
}

[[ -n "${HOME:-}" && "$HOME" == /* ]] || die "HOME is not set to an absolute path"
HOME_DIR="$(absolute "$HOME")"
check_path_chars HOME "$HOME_DIR"

OS="$(uname -s)"
ARCH="$(uname -m)"
case "$OS" in
    Linux)
        DATA_HOME="${XDG_DATA_HOME:-}"
        # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
        [[ "$DATA_HOME" == /* ]] || DATA_HOME="$HOME_DIR/.local/share"
        DATA_HOME="$(absolute "$DATA_HOME")"
        DEFAULT_APP_DIR="$DATA_HOME/sensiscope"
        DESKTOP_FILE="$DATA_HOME/applications/sensiscope.desktop"
        ICON_FILE="$DATA_HOME/icons/hicolor/scalable/apps/sensiscope.svg"
        ;;
    Darwin)
        DEFAULT_APP_DIR="$HOME_DIR/Library/Application Support/Sensiscope"
        DESKTOP_FILE=""
        ICON_FILE=""
        ;;
    *) die "this installer is for Linux and macOS; on Windows use installer/install.ps1 (found: $OS)" ;;
esac
BIN_DIR="$HOME_DIR/.local/bin"
LAUNCHER="$BIN_DIR/sensiscope"

if [[ -n "$PREFIX" ]]; then
    APP_DIR="$(absolute "$PREFIX")"
elif [[ -f "$SCRIPT_DIR/$MANIFEST_NAME" ]]; then
    # This is the copy kept in an application folder: it manages that installation.
    APP_DIR="$SCRIPT_DIR"
else
    APP_DIR="$DEFAULT_APP_DIR"
fi
check_path_chars "the application folder" "$APP_DIR"
if [[ "$APP_DIR" == / || "$APP_DIR" == "$HOME_DIR" ]]; then
    die "the application folder cannot be / or your home folder itself: $APP_DIR"
fi
VENV="$APP_DIR/venv"
MANIFEST="$APP_DIR/$MANIFEST_NAME"
VENV_PY="$VENV/bin/python"

# ---------------------------------------------------------------- helpers

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum <"$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 <"$1" | cut -d' ' -f1
    else
        die "neither sha256sum nor shasum is available to fingerprint installed files"
    fi
}

# A word for /bin/sh, in single quotes.
sh_quote() {
    local quote="'"
    local escaped="'\\''"
    printf "'%s'" "${1//$quote/$escaped}"
}

# One argument of a desktop entry's Exec key: quoted, with the spec's two levels of escaping.
desktop_exec_arg() {
    local arg="$1"
    arg="${arg//\\/\\\\}"
    arg="${arg//\"/\\\"}"
    arg="${arg//\`/\\\`}"
    arg="${arg//\$/\\\$}"
    arg="${arg//\\/\\\\}"
    arg="${arg//%/%%}"
    printf '"%s"' "$arg"
}

# A desktop entry string value (TryExec, Icon): only backslashes need escaping.
desktop_string() {
    printf '%s' "${1//\\/\\\\}"
}

manifest_add() {
    local IFS=$'\t'
    printf '%s\n' "$*" >>"$MANIFEST"
}

# Folders created before the manifest exists (the application folder and its parents).
PENDING_DIRS=()

# mkdir -p that records each folder it creates, so that --uninstall can remove exactly those.
make_dir() {
    local target="$1" missing=() parent dir i
    parent="$target"
    while [[ ! -e "$parent" ]]; do
        missing=("$parent" ${missing[@]+"${missing[@]}"})
        parent="$(dirname "$parent")"
    done
    [[ -d "$parent" ]] || die "$parent is not a folder"
    for ((i = 0; i < ${#missing[@]}; i++)); do
        dir="${missing[$i]}"
        mkdir "$dir"
        if [[ -f "$MANIFEST" ]]; then
            manifest_add dir "$dir"
        else
            PENDING_DIRS+=("$dir")
        fi
        info "created folder $dir"
    done
}

# Writes stdin to a file that the manifest records with its fingerprint; never overwrites a stranger's file.
write_file() {
    local path="$1" mode="$2"
    [[ ! -e "$path" && ! -L "$path" ]] || die "$path already exists and was not written by this installer; move it away and run again"
    make_dir "$(dirname "$path")"
    cat >"$path"
    chmod "$mode" "$path"
    manifest_add file "$(sha256_of "$path")" "$path"
    info "wrote $path"
}

# ---------------------------------------------------------------- uninstall

# The files this installer writes, wherever HOME and XDG_DATA_HOME pointed at install time.
is_installer_file() {
    case "$1" in
        "$APP_DIR/install.sh" | */.local/bin/sensiscope | */applications/sensiscope.desktop | */icons/hicolor/scalable/apps/sensiscope.svg) return 0 ;;
    esac
    return 1
}

valid_manifest_path() {
    local path="$1"
    [[ "$path" == /* ]] || return 1
    case "$path" in
        */./* | */../* | */. | */.. | *//* | */) return 1 ;;
    esac
    [[ "$path" != / && "$path" != "$HOME_DIR" ]] || return 1
    return 0
}

uninstall() {
    say "Uninstalling Sensiscope from $APP_DIR"
    [[ -f "$MANIFEST" ]] || die "no Sensiscope installation at $APP_DIR (no $MANIFEST_NAME there); nothing was removed. Give --prefix DIR for an installation elsewhere"
    local first
    IFS= read -r first <"$MANIFEST" || first=""
    [[ "$first" == "$MANIFEST_HEADER" ]] || die "$MANIFEST does not start with '$MANIFEST_HEADER'; nothing was removed"

    # Check every entry before removing anything: a manifest with one foreign entry is refused whole.
    local kinds=() hashes=() paths=() kind a b line_no=0 path
    while IFS=$'\t' read -r kind a b || [[ -n "$kind" ]]; do
        line_no=$((line_no + 1))
        [[ -z "$kind" || "$kind" == \#* ]] && continue
        case "$kind" in
            venv | dir) path="$a"; [[ -z "$b" ]] || die "manifest line $line_no has extra fields; nothing was removed" ;;
            file) path="$b" ;;
            *) die "manifest line $line_no has an unknown kind '$kind'; nothing was removed" ;;
        esac
        valid_manifest_path "$path" || die "manifest line $line_no names '$path', which this installer never writes; nothing was removed"
        case "$kind" in
            venv) [[ "$path" == "$VENV" ]] || die "manifest line $line_no names an environment other than $VENV: $path; nothing was removed" ;;
            file) is_installer_file "$path" || die "manifest line $line_no names '$path', not a file this installer writes; nothing was removed" ;;
        esac
        kinds+=("$kind")
        hashes+=("$a")
        paths+=("$path")
    done <"$MANIFEST"
    # A folder entry must be the application folder, or a folder that holds it or a listed file.
    local i j ok
    for ((i = 0; i < ${#kinds[@]}; i++)); do
        [[ "${kinds[$i]}" == dir ]] || continue
        ok=0
        [[ "${paths[$i]}" == "$APP_DIR" || "$APP_DIR" == "${paths[$i]}"/* ]] && ok=1
        for ((j = 0; j < ${#kinds[@]}; j++)); do
            [[ "${kinds[$j]}" == file && "${paths[$j]}" == "${paths[$i]}"/* ]] && ok=1
        done
        [[ "$ok" -eq 1 ]] || die "the manifest names the folder '${paths[$i]}', which holds nothing this installer writes; nothing was removed"
    done

    local kept=0
    # Files and the environment first, in the order they were installed.
    for ((i = 0; i < ${#kinds[@]}; i++)); do
        path="${paths[$i]}"
        case "${kinds[$i]}" in
            venv)
                if [[ -L "$path" ]]; then
                    warn "$path is a symbolic link, not the environment this installer made; left in place"; kept=1
                elif [[ -d "$path" ]]; then
                    if [[ -f "$path/pyvenv.cfg" ]]; then
                        rm -rf -- "$path"
                        info "removed environment $path"
                    else
                        warn "$path has no pyvenv.cfg, so it is not the environment this installer made; left in place"; kept=1
                    fi
                fi
                ;;
            file)
                if [[ -L "$path" || -f "$path" ]]; then
                    if [[ -f "$path" && ! -L "$path" && "$(sha256_of "$path")" == "${hashes[$i]}" ]]; then
                        rm -f -- "$path"
                        info "removed $path"
                    else
                        warn "$path changed since it was installed; left in place"; kept=1
                    fi
                elif [[ -e "$path" ]]; then
                    warn "$path is no longer a plain file; left in place"; kept=1
                fi
                ;;
        esac
    done
    # The manifest, then the folders the installer created, deepest (latest created) first, only when empty.
    rm -f -- "$MANIFEST"
    info "removed $MANIFEST"
    for ((i = ${#kinds[@]} - 1; i >= 0; i--)); do
        [[ "${kinds[$i]}" == dir ]] || continue
        path="${paths[$i]}"
        if [[ -d "$path" && ! -L "$path" ]]; then
            if rmdir -- "$path" 2>/dev/null; then
                info "removed folder $path"
            else
                info "kept folder $path (it holds files this installer did not write)"
            fi
        fi
    done
    say "Sensiscope is uninstalled"
    [[ "$kept" -eq 0 ]] || warn "some paths were left in place (see above)"
}

if [[ "$UNINSTALL" -eq 1 ]]; then
    uninstall
    exit 0
fi

# ---------------------------------------------------------------- plan

say "Sensiscope installer ($OS $ARCH)"

# The interpreter: 3.10 or newer, with venv and ensurepip (Debian splits them into python3-venv).
if [[ -n "$PYTHON_ARG" ]]; then
    PYTHON="$PYTHON_ARG"
    if [[ "$PYTHON" == */* ]]; then
        PYTHON="$(absolute "$PYTHON")"
    fi
else
    PYTHON="python3"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "no Python interpreter '$PYTHON' found; give one with --python"
PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')" || die "$PYTHON does not run"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "Sensiscope needs Python 3.10 or newer; $PYTHON is $PY_VERSION (choose one with --python)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON lacks the venv or ensurepip module (on Debian and Ubuntu: apt install python3-venv)"
PY_IS_VENV="$("$PYTHON" -c 'import sys; print(int(sys.prefix != sys.base_prefix))')"
info "python: $PYTHON ($PY_VERSION)"
if [[ "$SYSTEM_SITE" -eq 1 && "$PY_IS_VENV" == 1 ]]; then
    warn "$PYTHON belongs to a virtual environment: --system-site-packages shares only its base interpreter's packages, not that environment's (--reuse-site-packages DIR does that)"
fi

# What to install: a given wheel, or a wheel built from the source tree.
if [[ -n "$WHEEL" ]]; then
    WHEEL="$(absolute "$WHEEL")"
    [[ -f "$WHEEL" && "$WHEEL" == *.whl ]] || die "--wheel needs an existing .whl file: $WHEEL"
    case "$(basename "$WHEEL")" in
        sensiscope-*) ;;
        *) die "$WHEEL is not a Sensiscope wheel" ;;
    esac
    info "package: the wheel $WHEEL"
else
    [[ -n "$SOURCE_DIR" ]] || SOURCE_DIR="$(dirname "$SCRIPT_DIR")"
    SOURCE_DIR="$(absolute "$SOURCE_DIR")"
    if [[ ! -f "$SOURCE_DIR/pyproject.toml" ]] || ! grep -q '^name = "sensiscope"' "$SOURCE_DIR/pyproject.toml"; then
        die "$SOURCE_DIR is not a Sensiscope source tree (no pyproject.toml naming sensiscope); give --source DIR or --wheel FILE"
    fi
    info "package: built from the source tree $SOURCE_DIR"
fi

for dir in ${FIND_LINKS[@]+"${FIND_LINKS[@]}"} ${REUSE_SITE[@]+"${REUSE_SITE[@]}"}; do
    [[ -d "$dir" ]] || die "no such folder: $dir"
    check_path_chars "a folder" "$dir"
done

# The torch build.
TORCH_BUILD="$TORCH"
TORCH_REASON="asked for with --torch $TORCH"
if [[ "$TORCH" == auto ]]; then
    if [[ "$OS" == Darwin ]]; then
        if [[ "$ARCH" == arm64 ]]; then
            TORCH_BUILD="mps"; TORCH_REASON="Apple silicon: the default macOS wheel, which uses the GPU through MPS"
        else
            TORCH_BUILD="cpu"; TORCH_REASON="an Intel Mac: the default macOS wheel, CPU only"
        fi
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        TORCH_BUILD="cuda"; TORCH_REASON="nvidia-smi sees: $(nvidia-smi -L 2>/dev/null | head -n 1 || true)"
    else
        TORCH_BUILD="cpu"
        if command -v nvidia-smi >/dev/null 2>&1; then
            TORCH_REASON="nvidia-smi is present but lists no GPU (is the driver loaded?)"
        else
            TORCH_REASON="no NVIDIA driver (nvidia-smi not found)"
        fi
    fi
fi
if [[ "$OS" == Darwin && "$TORCH_BUILD" == cuda ]]; then
    die "there is no CUDA build of torch for macOS; use --torch auto (MPS on Apple silicon) or cpu"
fi
if [[ "$OS" == Darwin && "$ARCH" != arm64 && "$TORCH" != skip ]]; then
    warn "torch publishes no wheels for Intel Macs since 2.3, and Sensiscope needs torch 2.4 or newer: pip will probably find no torch"
fi
# The CUDA build for a driver: nvidia-smi's "CUDA Version" is the newest CUDA the driver runs,
# and a CUDA 12 build runs on any CUDA 12 driver (minor-version compatibility).
cuda_tag_for_driver() {
    local major="${1%%.*}" minor="${1#*.}"
    minor="${minor%%.*}"
    [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || return 1
    if [[ "$major" -ge 13 ]]; then
        echo cu130
    elif [[ "$major" -eq 12 && "$minor" -ge 8 ]]; then
        echo cu128
    elif [[ "$major" -eq 12 ]]; then
        echo cu126
    else
        return 1
    fi
}

# Where torch comes from: the CPU index on Linux (much smaller than the CUDA wheel PyPI serves);
# for CUDA on Linux the index of the build the driver runs (PyPI's own wheel needs the newest
# driver), or the default index when the driver says nothing; the default index on macOS (MPS).
TORCH_INDEX_USED=""
if [[ -n "$TORCH_INDEX" ]]; then
    TORCH_INDEX_USED="$TORCH_INDEX"
elif [[ "$OS" == Linux && "$TORCH_BUILD" == cpu ]]; then
    TORCH_INDEX_USED="$TORCH_INDEX_BASE/cpu"
elif [[ "$OS" == Linux && "$TORCH_BUILD" == cuda ]]; then
    DRIVER_CUDA=""
    if command -v nvidia-smi >/dev/null 2>&1; then
        DRIVER_CUDA="$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: *[0-9][0-9.]*' | head -n 1 | grep -o '[0-9][0-9.]*$' || true)"
    fi
    if [[ -z "$DRIVER_CUDA" ]]; then
        info "the NVIDIA driver's CUDA version is unknown: torch from the default index (its Linux wheel is a CUDA build)"
    elif CUDA_TAG="$(cuda_tag_for_driver "$DRIVER_CUDA")"; then
        TORCH_INDEX_USED="$TORCH_INDEX_BASE/$CUDA_TAG"
        info "the NVIDIA driver runs CUDA up to $DRIVER_CUDA: the $CUDA_TAG build"
    else
        warn "the NVIDIA driver runs CUDA up to $DRIVER_CUDA only, older than any current torch CUDA build: update the driver, or install with --torch cpu"
    fi
fi
info "torch build: $TORCH_BUILD ($TORCH_REASON)"
if [[ "$TORCH_BUILD" == skip ]]; then
    info "torch source: no torch-specific index; pip's configured index, or a torch already visible"
elif [[ -n "$TORCH_INDEX_USED" ]]; then
    info "torch source: extra index $TORCH_INDEX_USED"
else
    info "torch source: the default package index"
fi

info "application folder: $APP_DIR"
info "environment: $VENV$([[ "$SYSTEM_SITE" -eq 1 ]] && printf ' (with --system-site-packages)')"
for dir in ${REUSE_SITE[@]+"${REUSE_SITE[@]}"}; do
    info "reusing packages from: $dir (developer option)"
done
for dir in ${FIND_LINKS[@]+"${FIND_LINKS[@]}"}; do
    info "local wheels: $dir"
done
info "command: $LAUNCHER"
if [[ -n "$DESKTOP_FILE" ]]; then
    info "desktop entry: $DESKTOP_FILE"
    info "icon: $ICON_FILE"
fi
info "manifest: $MANIFEST"

# Refuse before changing anything when something already stands where the installer would write.
[[ ! -e "$MANIFEST" ]] || die "Sensiscope is already installed in $APP_DIR; remove it first with: $(sh_quote "$SCRIPT_PATH") --uninstall$([[ -n "$PREFIX" ]] && printf ' --prefix %s' "$(sh_quote "$APP_DIR")")"
[[ ! -e "$VENV" && ! -L "$VENV" ]] || die "$VENV already exists but no manifest says this installer made it; move it away and run again"
for path in "$LAUNCHER" "$DESKTOP_FILE" "$ICON_FILE" "$APP_DIR/install.sh"; do
    [[ -z "$path" ]] && continue
    [[ ! -e "$path" && ! -L "$path" ]] || die "$path already exists and was not written by this installer; move it away and run again"
done

if [[ "$DRY_RUN" -eq 1 ]]; then
    say "Dry run: nothing was changed"
    exit 0
fi

# ---------------------------------------------------------------- install

CURRENT_STEP="start"
WORK_DIR=""
on_exit() {
    local status=$?
    [[ -z "$WORK_DIR" ]] || rm -rf -- "$WORK_DIR"
    if [[ "$status" -ne 0 && -f "$MANIFEST" ]]; then
        printf '\nERROR: the installation stopped during: %s\n' "$CURRENT_STEP" >&2
        printf 'What was installed so far is listed in %s; remove it with:\n  %s --uninstall --prefix %s\n' \
            "$MANIFEST" "$(sh_quote "$SCRIPT_PATH")" "$(sh_quote "$APP_DIR")" >&2
    fi
}
trap on_exit EXIT
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sensiscope-install.XXXXXX")"

PIP_OPTIONS=(--disable-pip-version-check)
for dir in ${FIND_LINKS[@]+"${FIND_LINKS[@]}"}; do
    PIP_OPTIONS+=(--find-links "$(absolute "$dir")")
done

CURRENT_STEP="creating the application folder"
say "Creating the application folder $APP_DIR"
make_dir "$APP_DIR"
{
    printf '%s\n' "$MANIFEST_HEADER"
    printf '# Written by the Sensiscope installer; "install.sh --uninstall" removes exactly these paths.\n'
} >"$MANIFEST"
for dir in ${PENDING_DIRS[@]+"${PENDING_DIRS[@]}"}; do
    manifest_add dir "$dir"
done
info "wrote the manifest $MANIFEST"

CURRENT_STEP="creating the virtual environment"
say "Creating the virtual environment $VENV"
manifest_add venv "$VENV"
VENV_OPTIONS=()
[[ "$SYSTEM_SITE" -eq 0 ]] || VENV_OPTIONS+=(--system-site-packages)
"$PYTHON" -m venv ${VENV_OPTIONS[@]+"${VENV_OPTIONS[@]}"} "$VENV"
info "created with $PYTHON ($PY_VERSION)"
if [[ "${#REUSE_SITE[@]}" -gt 0 ]]; then
    VENV_SITE="$("$VENV_PY" -I -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    for dir in "${REUSE_SITE[@]}"; do
        absolute "$dir"
    done >"$VENV_SITE/_sensiscope_reuse_site_packages.pth"
    info "developer option: $VENV_SITE/_sensiscope_reuse_site_packages.pth makes these packages visible: ${REUSE_SITE[*]}"
fi

if [[ -n "$WHEEL" ]]; then
    PACKAGE="$WHEEL"
else
    CURRENT_STEP="building the Sensiscope wheel"
    say "Building a Sensiscope wheel from $SOURCE_DIR"
    "$VENV_PY" -m pip wheel ${PIP_OPTIONS[@]+"${PIP_OPTIONS[@]}"} --no-deps --wheel-dir "$WORK_DIR" "$SOURCE_DIR"
    PACKAGE="$(ls "$WORK_DIR"/sensiscope-*.whl)"
    info "built $(basename "$PACKAGE")"
fi

# The torch and torchvision requirements of the package being installed, one a line.
REQUIREMENTS_CODE='
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    metadata = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    for line in wheel.read(metadata).decode("utf-8").splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            requirement = line.split(":", 1)[1].strip()
            if re.split(r"[^A-Za-z0-9._-]", requirement, maxsplit=1)[0].lower() in ("torch", "torchvision"):
                print(requirement)
'
# Exits 1 (printing why) when a package index cannot be reached at all: no name, no connection,
# no answer. Any answer, even an error page or a certificate complaint, counts as reachable: pip decides.
PROBE_CODE='
import socket, ssl, sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=20).close()
except urllib.error.HTTPError:
    pass
except urllib.error.URLError as exc:
    if not isinstance(exc.reason, ssl.SSLError):
        print(exc.reason)
        sys.exit(1)
except (OSError, socket.timeout) as exc:
    if not isinstance(exc, ssl.SSLError):
        print(exc)
        sys.exit(1)
'

# torch_report prints "VERSION CUDA" (CUDA is "none" for a CPU or MPS build), or fails when torch is
# absent. It reads torch/version.py rather than importing torch, which takes seconds; the self-check imports it.
TORCH_REPORT_CODE='
import importlib.util, pathlib, runpy, sys
spec = importlib.util.find_spec("torch")
if spec is None or spec.origin is None:
    sys.exit(1)
try:
    found = runpy.run_path(str(pathlib.Path(spec.origin).parent / "version.py"))
except Exception:
    import torch
    found = {"__version__": torch.__version__, "cuda": torch.version.cuda}
print(found["__version__"], found.get("cuda") or "none")
'
torch_report() {
    "$VENV_PY" -I -c "$TORCH_REPORT_CODE" 2>/dev/null
}

# torch first, on its own, so that the torch index is asked about torch alone; then Sensiscope
# and the rest from the default index, where torch is already satisfied.
CURRENT_STEP="installing torch"
EXISTING_TORCH=""
if [[ "$TORCH_BUILD" == skip ]]; then
    say "torch: left to pip with the other dependencies (--torch skip)"
elif [[ "$SYSTEM_SITE" -eq 1 || "${#REUSE_SITE[@]}" -gt 0 ]] && EXISTING_TORCH="$(torch_report)"; then
    say "torch: keeping torch ${EXISTING_TORCH%% *}, already visible in the environment"
    if [[ "$TORCH_BUILD" == cuda && "${EXISTING_TORCH##* }" == none ]]; then
        warn "that torch has no CUDA support although this machine has an NVIDIA GPU; install without --system-site-packages / --reuse-site-packages for a CUDA build"
    fi
else
    TORCH_REQUIREMENTS=()
    while IFS= read -r requirement; do
        [[ -n "$requirement" ]] && TORCH_REQUIREMENTS+=("$requirement")
    done < <("$VENV_PY" -I -c "$REQUIREMENTS_CODE" "$PACKAGE")
    [[ "${#TORCH_REQUIREMENTS[@]}" -gt 0 ]] || die "the package $PACKAGE does not name torch among its requirements"
    say "Installing the $TORCH_BUILD build of torch: ${TORCH_REQUIREMENTS[*]}"
    TORCH_OPTIONS=()
    if [[ -n "$TORCH_INDEX_USED" && -z "$TORCH_INDEX" ]] && ! WHY="$("$VENV_PY" -I -c "$PROBE_CODE" "$TORCH_INDEX_USED")"; then
        warn "the torch index $TORCH_INDEX_USED cannot be reached ($WHY); taking torch from the default index instead (on Linux that is a CUDA build: larger, and it runs on the CPU too)"
        TORCH_INDEX_USED=""
    fi
    if [[ -n "$TORCH_INDEX_USED" ]]; then
        TORCH_OPTIONS+=(--extra-index-url "$TORCH_INDEX_USED")
        info "from the extra index $TORCH_INDEX_USED"
    else
        info "from the default index"
    fi
    "$VENV_PY" -m pip install ${PIP_OPTIONS[@]+"${PIP_OPTIONS[@]}"} ${TORCH_OPTIONS[@]+"${TORCH_OPTIONS[@]}"} "${TORCH_REQUIREMENTS[@]}"
fi

CURRENT_STEP="installing Sensiscope"
say "Installing Sensiscope and its other dependencies"
"$VENV_PY" -m pip install ${PIP_OPTIONS[@]+"${PIP_OPTIONS[@]}"} "$PACKAGE"

# Where Python finds Sensiscope, its icon and demo table, without importing torch. -I keeps the
# current folder (maybe a source tree) and PYTHONPATH out of sys.path.
LOCATE_CODE='
import importlib.util, pathlib, sys
prefix = pathlib.Path(sys.prefix).resolve()
origin = pathlib.Path(importlib.util.find_spec("engine").origin).resolve()
resources = origin.parent.parent / "resources"
inside = prefix in origin.parents
print(int(inside), resources / "icons" / "sensiscope.svg", resources / "data" / "pima.csv", sep="\t")
'
CURRENT_STEP="checking the installed files"
say "Checking that Sensiscope is installed inside the environment"
LOCATED="$("$VENV_PY" -I -c "$LOCATE_CODE")" || die "Python in $VENV cannot find the Sensiscope package"
IFS=$'\t' read -r INSIDE PACKAGE_ICON PACKAGE_TABLE <<<"$LOCATED"
if [[ "$INSIDE" != 1 ]]; then
    # pip can take a same-version Sensiscope visible through reused packages as already installed.
    info "pip kept a Sensiscope from outside the environment; installing the package itself again"
    "$VENV_PY" -m pip install ${PIP_OPTIONS[@]+"${PIP_OPTIONS[@]}"} --no-deps --force-reinstall "$PACKAGE"
    LOCATED="$("$VENV_PY" -I -c "$LOCATE_CODE")" || die "Python in $VENV cannot find the Sensiscope package"
    IFS=$'\t' read -r INSIDE PACKAGE_ICON PACKAGE_TABLE <<<"$LOCATED"
    [[ "$INSIDE" == 1 ]] || die "Sensiscope is not installed inside $VENV"
fi
[[ -f "$PACKAGE_ICON" ]] || die "the installed package lacks its icon ($PACKAGE_ICON)"
[[ -f "$PACKAGE_TABLE" ]] || die "the installed package lacks its demo table ($PACKAGE_TABLE)"
[[ -x "$VENV/bin/sensiscope" ]] || die "pip did not create $VENV/bin/sensiscope"
APP_VERSION="$("$VENV_PY" -I -c 'from importlib.metadata import version; print(version("sensiscope"))')"
info "Sensiscope $APP_VERSION with its resources in $(dirname "$(dirname "$PACKAGE_ICON")")"
if FOUND_TORCH="$(torch_report)"; then
    info "torch ${FOUND_TORCH%% *} (CUDA: ${FOUND_TORCH##* })"
    if [[ "$TORCH_BUILD" == cuda && "${FOUND_TORCH##* }" == none ]]; then
        warn "a CUDA build was asked for but pip installed a torch without CUDA; Sensiscope will run on the CPU"
    elif [[ "$OS" == Linux && "$TORCH_BUILD" == cpu && "${FOUND_TORCH##* }" != none && -z "$EXISTING_TORCH" ]]; then
        warn "pip installed a CUDA build of torch although the CPU build was asked for; it runs on the CPU, but is larger"
    fi
else
    die "torch is not installed in $VENV"
fi

CURRENT_STEP="writing the launcher"
say "Writing the launcher"
write_file "$LAUNCHER" 755 <<EOF
#!/bin/sh
# Sensiscope launcher, written by the Sensiscope installer; "install.sh --uninstall" removes it.
exec $(sh_quote "$VENV/bin/sensiscope") "\$@"
EOF
if [[ "$OS" == Linux ]]; then
    make_dir "$(dirname "$ICON_FILE")"
    write_file "$ICON_FILE" 644 <"$PACKAGE_ICON"
    write_file "$DESKTOP_FILE" 644 <<EOF
[Desktop Entry]
Type=Application
Name=Sensiscope
GenericName=Neural network sensitivity analysis
Comment=See how neural networks respond to perturbations of their inputs
Exec=$(desktop_exec_arg "$VENV/bin/sensiscope") gui %F
TryExec=$(desktop_string "$VENV/bin/sensiscope")
Icon=$(desktop_string "$ICON_FILE")
Terminal=false
Categories=Science;DataVisualization;
Keywords=saliency;attribution;sensitivity;Sobol;neural network;
StartupNotify=true
MimeType=image/png;image/jpeg;image/tiff;image/bmp;application/dicom;text/csv;application/zip;inode/directory;
EOF
fi
# A copy of this script in the application folder, so that it can be uninstalled without the source tree.
write_file "$APP_DIR/install.sh" 755 <"$SCRIPT_PATH"

CURRENT_STEP="checking the installation"
say "Checking the installation"
if "$VENV_PY" -I -c 'import PySide6.QtWidgets' 2>"$WORK_DIR/qt-error.txt"; then
    info "the GUI toolkit (PySide6) imports"
else
    warn "PySide6 does not import, so the window will not open (the command line works): $(tail -n 1 "$WORK_DIR/qt-error.txt")"
    warn "on Linux this usually means missing system libraries such as libEGL, libGL or libxkbcommon"
fi
info "running: $LAUNCHER --self-check"
if ! "$LAUNCHER" --self-check; then
    printf '\n' >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '!!  sensiscope --self-check FAILED: this installation does not work.  !!\n' >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf 'It is left in place for a look; the messages above say what failed.\n' >&2
    exit 1
fi
if [[ "$TORCH_BUILD" == cuda ]]; then
    if [[ "$("$VENV_PY" -I -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null || true)" == True ]]; then
        info "torch sees the NVIDIA GPU"
    else
        warn "torch does not see the NVIDIA GPU, so Sensiscope will compute on the CPU: is the driver new enough for this torch build (nvidia-smi shows its CUDA version)?"
    fi
fi
CURRENT_STEP="done"

say "Sensiscope $APP_VERSION is installed"
info "environment: $VENV"
info "command:     $LAUNCHER"
if [[ "$OS" == Linux ]]; then
    info "menu entry:  $DESKTOP_FILE"
    info "icon:        $ICON_FILE"
fi
info "manifest:    $MANIFEST"
info "uninstall:   $(sh_quote "$APP_DIR/install.sh") --uninstall"
case ":${PATH:-}:" in
    *":$BIN_DIR:"*) info "run it with:  sensiscope" ;;
    *)
        info "$BIN_DIR is not on your PATH: run $(sh_quote "$LAUNCHER"), or add this line to your shell's profile:"
        info "  export PATH=\"\$HOME/.local/bin:\$PATH\""
        ;;
esac
