# A host directory as the simulated board's flash (env MPFLEET_FLASH_DIR).
import vfs


class HostDir:
    # A host directory as the board's flash. VfsPosix(root) mangles absolute
    # paths in rename() (both paths share one buffer), so this keeps the root
    # itself and calls a root-less VfsPosix with full host paths.
    def __init__(self, root):
        self.root = root.rstrip("/")
        self.host = vfs.VfsPosix()
        self.cwd = "/"

    def _p(self, path):
        if not path.startswith("/"):
            path = self.cwd.rstrip("/") + "/" + path
        return self.root + path

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        return self.host.open(self._p(path), mode)

    def ilistdir(self, path):
        return self.host.ilistdir(self._p(path))

    def stat(self, path):
        return self.host.stat(self._p(path))

    def statvfs(self, path):
        return self.host.statvfs(self._p(path))

    def mkdir(self, path):
        self.host.mkdir(self._p(path))

    def rmdir(self, path):
        self.host.rmdir(self._p(path))

    def remove(self, path):
        self.host.remove(self._p(path))

    def rename(self, old, new):
        self.host.rename(self._p(old), self._p(new))

    def chdir(self, path):
        self.cwd = path if path.startswith("/") else self.cwd.rstrip("/") + "/" + path

    def getcwd(self):
        return self.cwd
