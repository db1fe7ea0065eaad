<#
.SYNOPSIS
Installs Sensiscope for the current Windows user, or removes it (-Uninstall).

.DESCRIPTION
Creates the application's own virtual environment (default %LOCALAPPDATA%\Sensiscope\venv),
picks the torch build for this machine (CUDA when nvidia-smi sees a GPU, CPU otherwise),
installs Sensiscope into it, writes a `sensiscope.cmd` command in %USERPROFILE%\.local\bin
(added to the user PATH when it is not on PATH already) and a Start-menu shortcut, records
every path it created in install-manifest.txt, and ends with `sensiscope --self-check`.
-Uninstall removes exactly what the manifest lists. installer/README.md tells the whole story.

Run it from a PowerShell prompt (Windows PowerShell 5.1 or PowerShell 7):
    powershell -ExecutionPolicy Bypass -File installer\install.ps1

.PARAMETER Prefix
Application folder (default %LOCALAPPDATA%\Sensiscope): the environment goes in PREFIX\venv,
the manifest in PREFIX\install-manifest.txt.

.PARAMETER Python
Interpreter for the environment, 3.10 or newer (default: the py launcher's Python 3, else python).

.PARAMETER Torch
auto (default): CUDA when nvidia-smi sees a GPU, CPU otherwise. cpu, cuda: that build.
skip: no torch-specific index; pip takes torch from its configured index or keeps one already present.

.PARAMETER TorchIndex
Extra package index for torch instead of the build's default (CUDA: the download.pytorch.org
index of the newest CUDA build the driver runs; CPU: none, PyPI's Windows wheel is the CPU build).

.PARAMETER Wheel
Install this Sensiscope wheel (default: build one from the source tree).

.PARAMETER Source
Source tree to build from (default: the tree this script lives in).

.PARAMETER FindLinks
Also look for packages in these folders (local wheel caches).

.PARAMETER SystemSitePackages
Let the environment see the packages of -Python's installation (a real interpreter, not a venv's).

.PARAMETER ReuseSitePackages
Developer/testing option: make the packages in these folders (a dev venv's site-packages)
visible through a .pth file so that torch is not copied again; Sensiscope itself is still
installed into the environment.

.PARAMETER DryRun
Print what would be done and change nothing.

.PARAMETER Uninstall
Remove what the manifest in the application folder lists, and nothing else.
#>
[CmdletBinding()]
param(
    [string]$Prefix = '',
    [string]$Python = '',
    [ValidateSet('auto', 'cpu', 'cuda', 'skip')][string]$Torch = 'auto',
    [string]$TorchIndex = '',
    [string]$Wheel = '',
    [string]$Source = '',
    [string[]]$FindLinks = @(),
    [switch]$SystemSitePackages,
    [string[]]$ReuseSitePackages = @(),
    [switch]$DryRun,
    [switch]$Uninstall
)

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

$ManifestName = 'install-manifest.txt'
$ManifestHeader = '# sensiscope install manifest v1'
$TorchIndexBase = 'https://download.pytorch.org/whl'
$Utf8 = New-Object System.Text.UTF8Encoding($false)
$Started = Get-Date
$ScriptPath = $MyInvocation.MyCommand.Path
$ScriptDir = Split-Path -Parent $ScriptPath

# ---------------------------------------------------------------- output

function Say([string]$Text) {
    $seconds = [int]((Get-Date) - $Started).TotalSeconds
    Write-Host ''
    Write-Host "==> [${seconds}s] $Text"
}
function Info([string]$Text) { Write-Host "    $Text" }
function Warn([string]$Text) { Write-Warning $Text }
function Fail([string]$Text) { throw "ERROR: $Text" }

# Runs a program and stops the installation when it fails (native programs do not throw).
function Invoke-Checked([string]$What, [string]$FilePath, [string[]]$Arguments) {
    & $FilePath @Arguments
    if ($LASTEXITCODE -ne 0) { Fail "$What failed (exit code $LASTEXITCODE)" }
}

# Runs a program for its output lines (an array, never unrolled); $null when it fails. Windows
# PowerShell 5.1 turns a native program's redirected stderr into errors, so the preference is
# relaxed for the call.
function Get-Output([string]$FilePath, [string[]]$Arguments) {
    $saved = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        $output = & $FilePath @Arguments 2>$null
        if ($LASTEXITCODE -ne 0) { return $null }
        return , @($output | ForEach-Object { "$_" })
    } catch {
        return $null
    } finally {
        $ErrorActionPreference = $saved
    }
}

# Whether a program succeeds, its output discarded.
function Test-Program([string]$FilePath, [string[]]$Arguments) {
    $saved = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        & $FilePath @Arguments *> $null
        return ($LASTEXITCODE -eq 0)
    } catch {
        return $false
    } finally {
        $ErrorActionPreference = $saved
    }
}

# ---------------------------------------------------------------- paths

# Absolute and normalised. A relative path is taken from PowerShell's location, which .NET's
# current directory (what GetFullPath alone would use) does not follow.
function Get-FullPath([string]$Path) {
    if (-not [System.IO.Path]::IsPathRooted($Path)) { $Path = Join-Path (Get-Location).ProviderPath $Path }
    $full = [System.IO.Path]::GetFullPath($Path)
    if ($full.Length -gt 3) { $full = $full.TrimEnd('\') }
    return $full
}

function Test-Under([string]$Path, [string]$Folder) {
    return $Path.StartsWith($Folder.TrimEnd('\') + '\', [System.StringComparison]::OrdinalIgnoreCase)
}

function Test-SamePath([string]$A, [string]$B) {
    return [string]::Equals($A.TrimEnd('\'), $B.TrimEnd('\'), [System.StringComparison]::OrdinalIgnoreCase)
}

if ([string]::IsNullOrEmpty($env:LOCALAPPDATA) -or [string]::IsNullOrEmpty($env:USERPROFILE)) {
    Write-Host 'ERROR: LOCALAPPDATA and USERPROFILE must be set'
    exit 1
}
$UserProfile = Get-FullPath $env:USERPROFILE
if ($Prefix) {
    $AppDir = Get-FullPath $Prefix
} elseif (Test-Path -LiteralPath (Join-Path $ScriptDir $ManifestName) -PathType Leaf) {
    # This is the copy kept in an application folder: it manages that installation.
    $AppDir = Get-FullPath $ScriptDir
} else {
    $AppDir = Get-FullPath (Join-Path $env:LOCALAPPDATA 'Sensiscope')
}
$Venv = Join-Path $AppDir 'venv'
$VenvPy = Join-Path $Venv 'Scripts\python.exe'
$VenvPyw = Join-Path $Venv 'Scripts\pythonw.exe'
$VenvApp = Join-Path $Venv 'Scripts\sensiscope.exe'
$Manifest = Join-Path $AppDir $ManifestName
$ScriptCopy = Join-Path $AppDir 'install.ps1'
$BinDir = Join-Path $UserProfile '.local\bin'
$Shim = Join-Path $BinDir 'sensiscope.cmd'
$Shortcut = Join-Path ([Environment]::GetFolderPath('Programs')) 'Sensiscope.lnk'

# ---------------------------------------------------------------- manifest

function Get-Sha256([string]$Path) {
    return (Get-FileHash -LiteralPath $Path -Algorithm SHA256).Hash.ToLowerInvariant()
}

function Add-ManifestLine([string[]]$Fields) {
    [System.IO.File]::AppendAllText($Manifest, (($Fields -join "`t") + "`r`n"), $Utf8)
}

$script:PendingDirs = @()

# Creates a folder and its missing parents, recording each one created, so that -Uninstall removes exactly those.
function New-RecordedFolder([string]$Folder) {
    $missing = @()
    $current = $Folder
    while (-not (Test-Path -LiteralPath $current)) {
        $missing = @($current) + $missing
        $current = Split-Path -Parent $current
        if (-not $current) { Fail "cannot create $Folder" }
    }
    if (-not (Test-Path -LiteralPath $current -PathType Container)) { Fail "$current is not a folder" }
    foreach ($dir in $missing) {
        [void][System.IO.Directory]::CreateDirectory($dir)
        if (Test-Path -LiteralPath $Manifest) { Add-ManifestLine @('dir', $dir) } else { $script:PendingDirs += $dir }
        Info "created folder $dir"
    }
}

function Assert-Absent([string]$Path) {
    if (Test-Path -LiteralPath $Path) { Fail "$Path already exists and was not written by this installer; move it away and run again" }
}

# Writes a text file that the manifest records with its fingerprint; never overwrites a stranger's file.
function Write-RecordedFile([string]$Path, [string]$Text, [System.Text.Encoding]$Encoding) {
    Assert-Absent $Path
    New-RecordedFolder (Split-Path -Parent $Path)
    [System.IO.File]::WriteAllText($Path, $Text, $Encoding)
    Add-ManifestLine @('file', (Get-Sha256 $Path), $Path)
    Info "wrote $Path"
}

# ---------------------------------------------------------------- user PATH

function Send-EnvironmentChange {
    # Tells Explorer (and so new terminals) that the user environment changed.
    try {
        if (-not ('SensiscopeInstaller.NativeMethods' -as [type])) {
            Add-Type -Namespace SensiscopeInstaller -Name NativeMethods -MemberDefinition @'
[DllImport("user32.dll", SetLastError = true, CharSet = CharSet.Unicode)]
public static extern IntPtr SendMessageTimeout(IntPtr hWnd, uint Msg, UIntPtr wParam, string lParam, uint fuFlags, uint uTimeout, out UIntPtr lpdwResult);
'@
        }
        $result = [UIntPtr]::Zero
        [void][SensiscopeInstaller.NativeMethods]::SendMessageTimeout([IntPtr]0xffff, 0x1A, [UIntPtr]::Zero, 'Environment', 2, 5000, [ref]$result)
    } catch {
        Warn 'could not announce the PATH change; it takes effect after you sign out and in again'
    }
}

# The user PATH as stored (unexpanded), read and written through the registry so that entries such as %USERPROFILE%\... keep their form.
function Get-UserPathEntries {
    $key = [Microsoft.Win32.Registry]::CurrentUser.OpenSubKey('Environment')
    if ($null -eq $key) { return @() }
    try {
        $raw = [string]$key.GetValue('Path', '', [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames)
    } finally {
        $key.Close()
    }
    return @($raw -split ';' | Where-Object { $_ -ne '' })
}

function Set-UserPathEntries([string[]]$Entries) {
    $key = [Microsoft.Win32.Registry]::CurrentUser.CreateSubKey('Environment')
    try {
        if (@($Entries).Count -eq 0) {
            $key.DeleteValue('Path', $false)
        } else {
            $key.SetValue('Path', ($Entries -join ';'), [Microsoft.Win32.RegistryValueKind]::ExpandString)
        }
    } finally {
        $key.Close()
    }
    Send-EnvironmentChange
}

function Test-PathEntry([string]$Entry, [string]$Folder) {
    return (Test-SamePath $Entry $Folder) -or (Test-SamePath ([Environment]::ExpandEnvironmentVariables($Entry)) $Folder)
}

# ---------------------------------------------------------------- uninstall

# The files this installer writes, wherever USERPROFILE and the Start menu were at install time.
function Test-InstallerFile([string]$Path) {
    return (Test-SamePath $Path $ScriptCopy) -or ($Path -like '*\.local\bin\sensiscope.cmd') -or ($Path -like '*\Start Menu\Programs\Sensiscope.lnk')
}

function Test-ManifestPath([string]$Path) {
    if (-not ($Path -match '^[A-Za-z]:\\' -or $Path -match '^\\\\[^\\]+\\')) { return $false }
    if ($Path -match '(^|\\)\.\.?(\\|$)' -or $Path.EndsWith('\') -or $Path.IndexOf('\\', 2) -ge 0) { return $false }
    if (Test-SamePath $Path $UserProfile) { return $false }
    return $true
}

function Test-ReparsePoint([string]$Path) {
    $item = Get-Item -LiteralPath $Path -Force
    return [bool]($item.Attributes -band [System.IO.FileAttributes]::ReparsePoint)
}

function Invoke-Uninstall {
    Say "Uninstalling Sensiscope from $AppDir"
    if (-not (Test-Path -LiteralPath $Manifest -PathType Leaf)) {
        Fail "no Sensiscope installation at $AppDir (no $ManifestName there); nothing was removed. Give -Prefix DIR for an installation elsewhere"
    }
    $lines = [System.IO.File]::ReadAllLines($Manifest, $Utf8)
    if ($lines.Count -eq 0 -or $lines[0] -ne $ManifestHeader) { Fail "$Manifest does not start with '$ManifestHeader'; nothing was removed" }

    # Check every entry before removing anything: a manifest with one foreign entry is refused whole.
    $entries = @()
    for ($n = 1; $n -lt $lines.Count; $n++) {
        $line = $lines[$n]
        if ($line -eq '' -or $line.StartsWith('#')) { continue }
        $fields = $line -split "`t"
        $kind = $fields[0]
        switch ($kind) {
            'file' { if ($fields.Count -ne 3) { Fail "manifest line $($n + 1) is malformed; nothing was removed" }; $hash = $fields[1]; $path = $fields[2] }
            { $_ -in @('dir', 'venv', 'userpath') } { if ($fields.Count -ne 2) { Fail "manifest line $($n + 1) is malformed; nothing was removed" }; $hash = ''; $path = $fields[1] }
            default { Fail "manifest line $($n + 1) has an unknown kind '$kind'; nothing was removed" }
        }
        if (-not (Test-ManifestPath $path)) { Fail "manifest line $($n + 1) names '$path', which this installer never writes; nothing was removed" }
        if ($kind -eq 'venv' -and -not (Test-SamePath $path $Venv)) { Fail "manifest line $($n + 1) names an environment other than ${Venv}: $path; nothing was removed" }
        if ($kind -eq 'file' -and -not (Test-InstallerFile $path)) { Fail "manifest line $($n + 1) names '$path', not a file this installer writes; nothing was removed" }
        if ($kind -eq 'userpath' -and -not ($path -like '*\.local\bin')) { Fail "manifest line $($n + 1) names a PATH entry this installer never adds: $path; nothing was removed" }
        $entries += , @($kind, $hash, $path)
    }
    # A folder entry must be the application folder, or a folder that holds it or a listed file.
    foreach ($entry in $entries) {
        if ($entry[0] -ne 'dir') { continue }
        $ok = (Test-SamePath $entry[2] $AppDir) -or (Test-Under $AppDir $entry[2])
        foreach ($other in $entries) {
            if ($other[0] -eq 'file' -and (Test-Under $other[2] $entry[2])) { $ok = $true }
        }
        if (-not $ok) { Fail "the manifest names the folder '$($entry[2])', which holds nothing this installer writes; nothing was removed" }
    }

    $kept = $false
    foreach ($entry in $entries) {
        $kind, $hash, $path = $entry
        if ($kind -eq 'venv' -and (Test-Path -LiteralPath $path)) {
            if (Test-ReparsePoint $path) {
                Warn "$path is a link, not the environment this installer made; left in place"; $kept = $true
            } elseif (Test-Path -LiteralPath (Join-Path $path 'pyvenv.cfg') -PathType Leaf) {
                # Directory.Delete removes links inside the tree without following them.
                [System.IO.Directory]::Delete($path, $true)
                Info "removed environment $path"
            } else {
                Warn "$path has no pyvenv.cfg, so it is not the environment this installer made; left in place"; $kept = $true
            }
        } elseif ($kind -eq 'file' -and (Test-Path -LiteralPath $path)) {
            if ((Test-Path -LiteralPath $path -PathType Leaf) -and -not (Test-ReparsePoint $path) -and (Get-Sha256 $path) -eq $hash) {
                Remove-Item -LiteralPath $path -Force
                Info "removed $path"
            } else {
                Warn "$path changed since it was installed; left in place"; $kept = $true
            }
        }
    }
    Remove-Item -LiteralPath $Manifest -Force
    Info "removed $Manifest"
    for ($i = $entries.Count - 1; $i -ge 0; $i--) {
        $kind, $hash, $path = $entries[$i]
        if ($kind -ne 'dir' -or -not (Test-Path -LiteralPath $path -PathType Container)) { continue }
        if (@(Get-ChildItem -LiteralPath $path -Force).Count -eq 0 -and -not (Test-ReparsePoint $path)) {
            Remove-Item -LiteralPath $path -Force
            Info "removed folder $path"
        } else {
            Info "kept folder $path (it holds files this installer did not write)"
        }
    }
    foreach ($entry in $entries) {
        $kind, $hash, $path = $entry
        if ($kind -ne 'userpath') { continue }
        if (Test-Path -LiteralPath $path) {
            Info "kept $path on your PATH: the folder holds other programs"
        } else {
            $remaining = @(Get-UserPathEntries | Where-Object { -not (Test-PathEntry $_ $path) })
            Set-UserPathEntries $remaining
            Info "removed $path from your user PATH"
        }
    }
    Say 'Sensiscope is uninstalled'
    if ($kept) { Warn 'some paths were left in place (see above)' }
}

if ($Uninstall) {
    try {
        Invoke-Uninstall
        exit 0
    } catch {
        Write-Host ''
        Write-Host $_.Exception.Message
        exit 1
    }
}

# ---------------------------------------------------------------- helper code run by the environment's Python

# One Python file with the checks that need Python: written to a temporary folder, run with -I so
# that the current folder and PYTHONPATH stay out of sys.path. (Code is not passed with -c because
# Windows PowerShell 5.1 mangles double quotes inside native arguments.)
$HelperCode = @'
import importlib.util, pathlib, re, runpy, socket, ssl, sys, sysconfig, urllib.error, urllib.request, zipfile


def torch_report():
    """VERSION CUDA of the visible torch (CUDA "none" for a CPU build), read without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return 1
    try:
        found = runpy.run_path(str(pathlib.Path(spec.origin).parent / "version.py"))
    except Exception:
        import torch
        found = {"__version__": torch.__version__, "cuda": torch.version.cuda}
    print(found["__version__"], found.get("cuda") or "none")
    return 0


def requirements(wheel):
    """The torch and torchvision requirements of a wheel, one a line."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        for line in archive.read(metadata).decode("utf-8").splitlines():
            if line.startswith("Requires-Dist:") and "extra ==" not in line:
                requirement = line.split(":", 1)[1].strip()
                if re.split(r"[^A-Za-z0-9._-]", requirement, maxsplit=1)[0].lower() in ("torch", "torchvision"):
                    print(requirement)
    return 0


def probe(url):
    """Exit 1 when the index cannot be reached at all; any answer counts as reachable."""
    try:
        urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=20).close()
    except urllib.error.HTTPError:
        pass
    except urllib.error.URLError as exc:
        if not isinstance(exc.reason, ssl.SSLError):
            print(exc.reason)
            return 1
    except (OSError, socket.timeout) as exc:
        if not isinstance(exc, ssl.SSLError):
            print(exc)
            return 1
    return 0


def locate():
    """inside-the-environment flag, then the icon (svg, ico) and demo table paths of the installed package."""
    prefix = pathlib.Path(sys.prefix).resolve()
    origin = pathlib.Path(importlib.util.find_spec("engine").origin).resolve()
    resources = origin.parent.parent / "resources"
    print(int(prefix in origin.parents))
    print(resources / "icons" / "sensiscope.svg")
    print(resources / "icons" / "sensiscope.ico")
    print(resources / "data" / "pima.csv")
    return 0


def purelib():
    print(sysconfig.get_paths()["purelib"])
    return 0


def version():
    from importlib.metadata import version as version_of
    print(version_of("sensiscope"))
    return 0


def cuda():
    import torch
    print(torch.cuda.is_available())
    return 0


def qt():
    import PySide6.QtWidgets  # noqa: F401
    return 0


COMMANDS = {"torch-report": torch_report, "requirements": requirements, "probe": probe, "locate": locate,
            "purelib": purelib, "version": version, "cuda": cuda, "qt": qt}
sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
'@

# ---------------------------------------------------------------- plan

$WorkDir = $null
$ManifestStarted = $false
$CurrentStep = 'planning'
try {
    Say "Sensiscope installer (Windows $([Environment]::OSVersion.Version), $env:PROCESSOR_ARCHITECTURE)"

    # The interpreter: 3.10 or newer, with venv and ensurepip.
    if ($Python) {
        $command = Get-Command $Python -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
        if ($null -eq $command) { Fail "no Python interpreter '$Python' found; give one with -Python" }
        $PythonExe = $command.Path
    } else {
        $PythonExe = $null
        if (Get-Command py -ErrorAction SilentlyContinue) {
            $found = Get-Output 'py' @('-3', '-c', 'import sys; print(sys.executable)')
            if ($found) { $PythonExe = $found[-1].Trim() }
        }
        if (-not $PythonExe -and (Get-Command python -ErrorAction SilentlyContinue)) {
            # The Microsoft Store's python.exe stub prints a hint and fails, so it is run, not trusted.
            $found = Get-Output 'python' @('-c', 'import sys; print(sys.executable)')
            if ($found) { $PythonExe = $found[-1].Trim() }
        }
        if (-not $PythonExe) { Fail 'no Python 3 found: install Python 3.10 or newer from python.org, or give one with -Python' }
    }
    $found = Get-Output $PythonExe @('-c', 'import sys; print(sys.version.split()[0])')
    if (-not $found) { Fail "$PythonExe does not run" }
    $PyVersion = $found[-1].Trim()
    if (-not (Test-Program $PythonExe @('-c', 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'))) {
        Fail "Sensiscope needs Python 3.10 or newer; $PythonExe is $PyVersion (choose one with -Python)"
    }
    if (-not (Test-Program $PythonExe @('-c', 'import venv, ensurepip'))) { Fail "$PythonExe lacks the venv or ensurepip module" }
    Info "python: $PythonExe ($PyVersion)"
    if ($SystemSitePackages -and ((Get-Output $PythonExe @('-c', 'import sys; print(int(sys.prefix != sys.base_prefix))')) -contains '1')) {
        Warn "$PythonExe belongs to a virtual environment: -SystemSitePackages shares only its base interpreter's packages, not that environment's (-ReuseSitePackages does that)"
    }

    # What to install: a given wheel, or a wheel built from the source tree.
    if ($Wheel) {
        $Wheel = Get-FullPath $Wheel
        if (-not (Test-Path -LiteralPath $Wheel -PathType Leaf) -or -not $Wheel.EndsWith('.whl')) { Fail "-Wheel needs an existing .whl file: $Wheel" }
        if (-not ((Split-Path -Leaf $Wheel) -like 'sensiscope-*')) { Fail "$Wheel is not a Sensiscope wheel" }
        Info "package: the wheel $Wheel"
    } else {
        if (-not $Source) { $Source = Split-Path -Parent $ScriptDir }
        $Source = Get-FullPath $Source
        $pyproject = Join-Path $Source 'pyproject.toml'
        if (-not (Test-Path -LiteralPath $pyproject -PathType Leaf) -or -not (Select-String -LiteralPath $pyproject -Pattern '^name = "sensiscope"' -Quiet)) {
            Fail "$Source is not a Sensiscope source tree (no pyproject.toml naming sensiscope); give -Source DIR or -Wheel FILE"
        }
        Info "package: built from the source tree $Source"
    }
    foreach ($dir in @($FindLinks) + @($ReuseSitePackages)) {
        if (-not (Test-Path -LiteralPath $dir -PathType Container)) { Fail "no such folder: $dir" }
    }

    # The torch build.
    $TorchBuild = $Torch
    $TorchReason = "asked for with -Torch $Torch"
    $HasSmi = [bool](Get-Command nvidia-smi -ErrorAction SilentlyContinue)
    if ($Torch -eq 'auto') {
        $gpus = @()
        if ($HasSmi) {
            $listed = Get-Output 'nvidia-smi' @('-L')
            if ($listed) { $gpus = @($listed | Where-Object { $_ -match '^GPU' }) }
        }
        if ($gpus) {
            $TorchBuild = 'cuda'; $TorchReason = "nvidia-smi sees: $($gpus[0])"
        } elseif ($HasSmi) {
            $TorchBuild = 'cpu'; $TorchReason = 'nvidia-smi is present but lists no GPU (is the driver working?)'
        } else {
            $TorchBuild = 'cpu'; $TorchReason = 'no NVIDIA driver (nvidia-smi not found)'
        }
    }
    # PyPI's Windows torch is the CPU build; CUDA builds come from download.pytorch.org, the one
    # the driver runs (nvidia-smi's "CUDA Version" is the newest CUDA the driver supports, and a
    # CUDA 12 build runs on any CUDA 12 driver).
    $TorchIndexUsed = ''
    if ($TorchIndex) {
        $TorchIndexUsed = $TorchIndex
    } elseif ($TorchBuild -eq 'cuda') {
        $tag = 'cu126'
        $driverCuda = $null
        if ($HasSmi) {
            $header = (Get-Output 'nvidia-smi' @()) -join "`n"
            if ($header -match 'CUDA Version:\s*(\d+)\.(\d+)') { $driverCuda = [version]"$($Matches[1]).$($Matches[2])" }
        }
        if ($null -eq $driverCuda) {
            Info "the NVIDIA driver's CUDA version is unknown: the $tag build"
        } else {
            if ($driverCuda -ge [version]'13.0') { $tag = 'cu130' }
            elseif ($driverCuda -ge [version]'12.8') { $tag = 'cu128' }
            elseif ($driverCuda -lt [version]'12.0') { Warn "the NVIDIA driver runs CUDA up to $driverCuda only, older than any current torch CUDA build: update the driver, or install with -Torch cpu" }
            Info "the NVIDIA driver runs CUDA up to ${driverCuda}: the $tag build"
        }
        $TorchIndexUsed = "$TorchIndexBase/$tag"
    }
    Info "torch build: $TorchBuild ($TorchReason)"
    if ($TorchBuild -eq 'skip') { Info "torch source: no torch-specific index; pip's configured index, or a torch already visible" }
    elseif ($TorchIndexUsed) { Info "torch source: extra index $TorchIndexUsed" }
    else { Info 'torch source: the default package index' }

    Info "application folder: $AppDir"
    $venvNote = ''
    if ($SystemSitePackages) { $venvNote = ' (with -SystemSitePackages)' }
    Info "environment: $Venv$venvNote"
    foreach ($dir in $ReuseSitePackages) { Info "reusing packages from: $dir (developer option)" }
    foreach ($dir in $FindLinks) { Info "local wheels: $dir" }
    Info "command: $Shim"
    Info "Start-menu shortcut: $Shortcut"
    Info "manifest: $Manifest"

    # Refuse before changing anything when something already stands where the installer would write.
    if (Test-Path -LiteralPath $Manifest) { Fail "Sensiscope is already installed in $AppDir; remove it first with: & '$ScriptPath' -Uninstall -Prefix '$AppDir'" }
    if (Test-Path -LiteralPath $Venv) { Fail "$Venv already exists but no manifest says this installer made it; move it away and run again" }
    foreach ($path in @($Shim, $Shortcut, $ScriptCopy)) { Assert-Absent $path }

    if ($DryRun) {
        Say 'Dry run: nothing was changed'
        exit 0
    }

    # ------------------------------------------------------------ install

    $WorkDir = Join-Path ([System.IO.Path]::GetTempPath()) ('sensiscope-install-' + [guid]::NewGuid().ToString('N'))
    [void][System.IO.Directory]::CreateDirectory($WorkDir)
    $Helper = Join-Path $WorkDir 'helper.py'
    [System.IO.File]::WriteAllText($Helper, $HelperCode, $Utf8)
    $PipOptions = @('--disable-pip-version-check')
    foreach ($dir in $FindLinks) { $PipOptions += @('--find-links', (Get-FullPath $dir)) }

    $CurrentStep = 'creating the application folder'
    Say "Creating the application folder $AppDir"
    New-RecordedFolder $AppDir
    [System.IO.File]::WriteAllText($Manifest, "$ManifestHeader`r`n# Written by the Sensiscope installer; `"install.ps1 -Uninstall`" removes exactly these paths.`r`n", $Utf8)
    $ManifestStarted = $true
    foreach ($dir in $script:PendingDirs) { Add-ManifestLine @('dir', $dir) }
    Info "wrote the manifest $Manifest"

    $CurrentStep = 'creating the virtual environment'
    Say "Creating the virtual environment $Venv"
    Add-ManifestLine @('venv', $Venv)
    $venvArgs = @('-m', 'venv')
    if ($SystemSitePackages) { $venvArgs += '--system-site-packages' }
    Invoke-Checked 'creating the environment' $PythonExe ($venvArgs + @($Venv))
    Info "created with $PythonExe ($PyVersion)"
    if ($ReuseSitePackages.Count -gt 0) {
        $purelib = (Get-Output $VenvPy @('-I', $Helper, 'purelib'))[-1].Trim()
        $pth = Join-Path $purelib '_sensiscope_reuse_site_packages.pth'
        [System.IO.File]::WriteAllText($pth, ((@($ReuseSitePackages) | ForEach-Object { Get-FullPath $_ }) -join "`n") + "`n", $Utf8)
        Info "developer option: $pth makes these packages visible: $($ReuseSitePackages -join ', ')"
    }

    if ($Wheel) {
        $Package = $Wheel
    } else {
        $CurrentStep = 'building the Sensiscope wheel'
        Say "Building a Sensiscope wheel from $Source"
        Invoke-Checked 'building the wheel' $VenvPy (@('-m', 'pip', 'wheel') + $PipOptions + @('--no-deps', '--wheel-dir', $WorkDir, $Source))
        $Package = @(Get-ChildItem -LiteralPath $WorkDir -Filter 'sensiscope-*.whl')[0].FullName
        Info "built $(Split-Path -Leaf $Package)"
    }

    # torch first, on its own, so that the torch index is asked about torch alone; then Sensiscope
    # and the rest from the default index, where torch is already satisfied.
    $CurrentStep = 'installing torch'
    $ExistingTorch = $null
    if ($SystemSitePackages -or $ReuseSitePackages.Count -gt 0) { $ExistingTorch = Get-Output $VenvPy @('-I', $Helper, 'torch-report') }
    if ($TorchBuild -eq 'skip') {
        Say 'torch: left to pip with the other dependencies (-Torch skip)'
    } elseif ($ExistingTorch) {
        $existing = $ExistingTorch[-1].Split(' ')
        Say "torch: keeping torch $($existing[0]), already visible in the environment"
        if ($TorchBuild -eq 'cuda' -and $existing[1] -eq 'none') {
            Warn 'that torch has no CUDA support although this machine has an NVIDIA GPU; install without -SystemSitePackages / -ReuseSitePackages for a CUDA build'
        }
    } else {
        $listed = Get-Output $VenvPy @('-I', $Helper, 'requirements', $Package)
        $requirements = @()
        if ($listed) { $requirements = @($listed | Where-Object { $_ }) }
        if ($requirements.Count -eq 0) { Fail "the package $Package does not name torch among its requirements" }
        Say "Installing the $TorchBuild build of torch: $($requirements -join ' ')"
        $torchOptions = @()
        if ($TorchIndexUsed -and -not $TorchIndex) {
            $why = Get-Output $VenvPy @('-I', $Helper, 'probe', $TorchIndexUsed)
            if ($null -eq $why) {
                Warn "the torch index $TorchIndexUsed cannot be reached; taking torch from the default index instead (on Windows that is the CPU build)"
                $TorchIndexUsed = ''
            }
        }
        if ($TorchIndexUsed) {
            $torchOptions = @('--extra-index-url', $TorchIndexUsed)
            Info "from the extra index $TorchIndexUsed"
        } else {
            Info 'from the default index'
        }
        Invoke-Checked 'installing torch' $VenvPy (@('-m', 'pip', 'install') + $PipOptions + $torchOptions + $requirements)
    }

    $CurrentStep = 'installing Sensiscope'
    Say 'Installing Sensiscope and its other dependencies'
    Invoke-Checked 'installing Sensiscope' $VenvPy (@('-m', 'pip', 'install') + $PipOptions + @($Package))

    $CurrentStep = 'checking the installed files'
    Say 'Checking that Sensiscope is installed inside the environment'
    $located = Get-Output $VenvPy @('-I', $Helper, 'locate')
    if ($null -eq $located) { Fail "Python in $Venv cannot find the Sensiscope package" }
    if ($located[0] -ne '1') {
        # pip can take a same-version Sensiscope visible through reused packages as already installed.
        Info 'pip kept a Sensiscope from outside the environment; installing the package itself again'
        Invoke-Checked 'installing Sensiscope' $VenvPy (@('-m', 'pip', 'install') + $PipOptions + @('--no-deps', '--force-reinstall', $Package))
        $located = Get-Output $VenvPy @('-I', $Helper, 'locate')
        if ($null -eq $located -or $located[0] -ne '1') { Fail "Sensiscope is not installed inside $Venv" }
    }
    $PackageIco = $located[2]
    foreach ($path in @($located[1], $PackageIco, $located[3])) {
        if (-not (Test-Path -LiteralPath $path -PathType Leaf)) { Fail "the installed package lacks $path" }
    }
    foreach ($path in @($VenvApp, $VenvPyw)) {
        if (-not (Test-Path -LiteralPath $path -PathType Leaf)) { Fail "$path is missing from the environment" }
    }
    $AppVersion = (Get-Output $VenvPy @('-I', $Helper, 'version'))[-1].Trim()
    Info "Sensiscope $AppVersion with its resources beside it in $(Split-Path -Parent (Split-Path -Parent $PackageIco))"
    $foundTorch = Get-Output $VenvPy @('-I', $Helper, 'torch-report')
    if ($null -eq $foundTorch) { Fail "torch is not installed in $Venv" }
    $torchFields = $foundTorch[-1].Split(' ')
    Info "torch $($torchFields[0]) (CUDA: $($torchFields[1]))"
    if ($TorchBuild -eq 'cuda' -and $torchFields[1] -eq 'none') {
        Warn 'a CUDA build was asked for but pip installed a torch without CUDA; Sensiscope will run on the CPU'
    }

    $CurrentStep = 'writing the launcher'
    Say 'Writing the launcher'
    # cmd.exe reads batch files in the OEM code page; %LOCALAPPDATA% keeps a non-ASCII user name out of the file.
    $target = $VenvApp
    if (Test-Under $target $env:LOCALAPPDATA) { $target = '%LOCALAPPDATA%' + $target.Substring($env:LOCALAPPDATA.TrimEnd('\').Length) }
    elseif (Test-Under $target $UserProfile) { $target = '%USERPROFILE%' + $target.Substring($UserProfile.Length) }
    else { $target = $target.Replace('%', '%%') }
    $shimText = "@echo off`r`nrem Sensiscope launcher, written by the Sensiscope installer; `"install.ps1 -Uninstall`" removes it.`r`n`"$target`" %*`r`nexit /b %ERRORLEVEL%`r`n"
    try {
        $oem = [System.Text.Encoding]::GetEncoding([System.Globalization.CultureInfo]::CurrentCulture.TextInfo.OEMCodePage)
    } catch {
        $oem = [System.Text.Encoding]::ASCII
    }
    Write-RecordedFile $Shim $shimText $oem

    $onPath = @($env:Path -split ';' | Where-Object { $_ -and (Test-PathEntry $_ $BinDir) }).Count -gt 0
    $inUserPath = @(Get-UserPathEntries | Where-Object { Test-PathEntry $_ $BinDir }).Count -gt 0
    if ($onPath -or $inUserPath) {
        Info "$BinDir is already on your PATH"
    } else {
        Set-UserPathEntries (@(Get-UserPathEntries) + $BinDir)
        Add-ManifestLine @('userpath', $BinDir)
        Info "added $BinDir to your user PATH (new terminals see it)"
    }

    # The Start-menu shortcut starts the GUI through pythonw.exe, so that no console window opens;
    # -I keeps the working folder out of sys.path.
    Assert-Absent $Shortcut
    New-RecordedFolder (Split-Path -Parent $Shortcut)
    $shell = New-Object -ComObject WScript.Shell
    $link = $shell.CreateShortcut($Shortcut)
    $link.TargetPath = $VenvPyw
    $link.Arguments = '-I -m main'
    $link.WorkingDirectory = $UserProfile
    $link.IconLocation = "$PackageIco,0"
    $link.Description = 'Sensitivity analysis of neural networks'
    $link.Save()
    Add-ManifestLine @('file', (Get-Sha256 $Shortcut), $Shortcut)
    Info "wrote $Shortcut"

    # A copy of this script in the application folder, so that it can be uninstalled without the source tree.
    Assert-Absent $ScriptCopy
    Copy-Item -LiteralPath $ScriptPath -Destination $ScriptCopy
    Add-ManifestLine @('file', (Get-Sha256 $ScriptCopy), $ScriptCopy)
    Info "wrote $ScriptCopy"

    $CurrentStep = 'checking the installation'
    Say 'Checking the installation'
    if (Test-Program $VenvPy @('-I', $Helper, 'qt')) {
        Info 'the GUI toolkit (PySide6) imports'
    } else {
        Warn 'PySide6 does not import, so the window will not open (the command line works); the Microsoft Visual C++ Redistributable may be missing'
    }
    Info "running: $Shim --self-check"
    & $Shim --self-check
    if ($LASTEXITCODE -ne 0) {
        Write-Host ''
        Write-Host '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
        Write-Host '!!  sensiscope --self-check FAILED: this installation does not work.  !!'
        Write-Host '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
        Write-Host 'It is left in place for a look; the messages above say what failed.'
        exit 1
    }
    if ($TorchBuild -eq 'cuda') {
        if ((Get-Output $VenvPy @('-I', $Helper, 'cuda')) -contains 'True') { Info 'torch sees the NVIDIA GPU' }
        else { Warn 'torch does not see the NVIDIA GPU, so Sensiscope will compute on the CPU: is the driver new enough for this torch build (nvidia-smi shows its CUDA version)?' }
    }
    $CurrentStep = 'done'

    Say "Sensiscope $AppVersion is installed"
    Info "environment: $Venv"
    Info "command:     $Shim"
    Info "Start menu:  $Shortcut"
    Info "manifest:    $Manifest"
    Info "uninstall:   & '$ScriptCopy' -Uninstall"
    Info 'run it with:  sensiscope   (in a new terminal), or from the Start menu'
    exit 0
} catch {
    Write-Host ''
    Write-Host $_.Exception.Message
    if ($ManifestStarted) {
        Write-Host "The installation stopped during: $CurrentStep"
        Write-Host "What was installed so far is listed in $Manifest; remove it with:"
        Write-Host "  & '$ScriptPath' -Uninstall -Prefix '$AppDir'"
    }
    exit 1
} finally {
    if ($WorkDir -and (Test-Path -LiteralPath $WorkDir)) { Remove-Item -LiteralPath $WorkDir -Recurse -Force -ErrorAction SilentlyContinue }
}
