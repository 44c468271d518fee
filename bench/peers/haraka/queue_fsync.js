// Haraka queue plugin for the Mailroom benchmark: accepts every recipient and,
// before answering the end of DATA, writes the message to its own file in
// the directory named by the environment variable BENCH_SPOOL and fsyncs it
// (open O_EXCL, write, fsync, close; with BENCH_DIR_FSYNC=1 also the
// directory), so that Haraka's 250 means the message is on disk.
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const spool = process.env.BENCH_SPOOL
const dirSync = process.env.BENCH_DIR_FSYNC === '1'
let n = 0

exports.register = function () {
    if (!spool) throw new Error('queue_fsync: BENCH_SPOOL is not set')
    fs.mkdirSync(spool, { recursive: true })
}

exports.hook_rcpt = function (next) {
    next(OK)
}

const fsyncDir = (cb) => {
    if (!dirSync) return cb(null)
    fs.open(spool, 'r', (err, fd) => {
        if (err) return cb(err)
        fs.fsync(fd, (e) => fs.close(fd, () => cb(e)))
    })
}

exports.hook_queue = function (next, connection) {
    const txn = connection.transaction
    txn.message_stream.get_data((data) => {
        const file = path.join(spool, `${process.pid}.${n++}.eml`)
        fs.open(file, 'wx', 0o600, (err, fd) => {
            if (err) return next(DENYSOFT, 'queue write failed')
            fs.write(fd, data, 0, data.length, null, (e1) => {
                if (e1) return fs.close(fd, () => next(DENYSOFT, 'queue write failed'))
                fs.fsync(fd, (e2) => {
                    fs.close(fd, (e3) => {
                        if (e2 || e3) return next(DENYSOFT, 'queue write failed')
                        fsyncDir((e4) => (e4 ? next(DENYSOFT, 'queue write failed') : next(OK, 'Ok: queued')))
                    })
                })
            })
        })
    })
}
