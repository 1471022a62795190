#!/usr/bin/env python3
"""What deleting large files does to another file's fdatasync (BENCHMARKS.md, "Flushes paced").
Writes three 64 MB files, then deletes them while a fourth file is written and fdatasynced every
millisecond, and prints the syncs' p50 / p99 / max during the deletions.
    python3 tests/bench/delete_vs_sync.py unlink          # one unlink per file
    python3 tests/bench/delete_vs_sync.py trunc [STEP_BYTES] [PAUSE_S]   # truncate in steps
Run it in a directory on the disk in question (it uses /tmp/delete_vs_sync). Not part of the
test suite."""
import os, time, threading, sys
mode=sys.argv[1]; chunk=int(sys.argv[2]) if len(sys.argv)>2 else 4<<20; pause=float(sys.argv[3]) if len(sys.argv)>3 else 0.01
d='/tmp/delete_vs_sync'; os.makedirs(d,exist_ok=True)
# make 3 64MB files written and synced
for i in range(3):
    with open(f'{d}/big{i}','wb') as f:
        for _ in range(64): f.write(os.urandom(1<<20))
        f.flush(); os.fsync(f.fileno())
fd=os.open(f'{d}/jnl',os.O_RDWR|os.O_CREAT|os.O_TRUNC)
os.write(fd,b'\0'*(8<<20)); os.fsync(fd); os.lseek(fd,0,0)
samples=[]; stop=False
def syncer():
    while not stop:
        os.write(fd,b'x'*4096); t=time.perf_counter(); os.fdatasync(fd); samples.append((t,(time.perf_counter()-t)*1000)); time.sleep(0.001)
th=threading.Thread(target=syncer); th.start()
time.sleep(0.5)
t0=time.perf_counter()
for i in range(3):
    p=f'{d}/big{i}'
    if mode=='unlink': os.unlink(p)
    else:
        size=os.path.getsize(p)
        with open(p,'r+b') as f:
            while size>0:
                size=max(0,size-chunk); f.truncate(size); time.sleep(pause)
        os.unlink(p)
    time.sleep(0.3)
t1=time.perf_counter()
time.sleep(0.5); stop=True; th.join()
win=[d for t,d in samples if t0<=t<=t1+0.2]
win.sort(); print(mode, 'syncs in window',len(win),'p50 %.2f p99 %.2f max %.2f ms'%(win[len(win)//2],win[int(len(win)*0.99)],win[-1]), 'deletion took %.0f ms'%((t1-t0-0.9)*1000))
