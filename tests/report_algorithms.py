"""Algorithms for tests/test_reports.py: one that misuses the model's
interface, one written for the seed's model (no PML drain)."""

from concurrent_dirty.dirtylog import XchgDirtyLog


class ReportsTooMany(XchgDirtyLog):
    """get_dirty_log returns more words than the slot has: a misuse."""

    def get_dirty_log(self, slot_id: int) -> list[int]:
        words = super().get_dirty_log(slot_id)
        return words + [0] * 4  # BUG: past the slot's bitmap


class NoSyncXchg(XchgDirtyLog):
    """xchg without kvm_arch_sync_dirty_log: correct in the 2012 model, it
    loses the bits still in the vCPUs' PML buffers (``varies`` inherited
    from XchgDirtyLog draws PML)."""

    def _sync_dirty_log(self) -> None:
        pass  # BUG under PML: never drains the buffers


class ReleasesUnheld(XchgDirtyLog):
    """GET releases mmu_lock it never took: a misuse, raised by the lock
    inside the code under test's call."""

    def get_dirty_log(self, slot_id: int) -> list[int]:
        words = super().get_dirty_log(slot_id)
        self.kvm.mmu_lock.release(-1)  # BUG: not held
        return words


class KeepsItsLock(XchgDirtyLog):
    """vCPU 0 takes a lock of its own at its first mark and never releases
    it: vCPU 1 blocks on it for good, and then the harvester waits for the
    writers: no thread can run."""

    @classmethod
    def shared_locks(cls, memslots: object) -> dict[str, int]:
        return {"kept": 1}

    def __init__(self, kvm: object) -> None:
        super().__init__(kvm)  # type: ignore[arg-type]
        self.taken = False

    def mark_page_dirty(self, gfn: int, vcpu_id: int) -> None:
        lock = self.kvm.lock("kept", 0)
        if vcpu_id == 0:
            if not self.taken:
                lock.acquire(vcpu_id)  # BUG: never released
                self.taken = True
        else:
            with lock.held(vcpu_id):
                pass
        super().mark_page_dirty(gfn, vcpu_id)
