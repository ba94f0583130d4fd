'use strict'
// Leader election in a NestJS application: a provider owns the locker (created with the module,
// closed when the application shuts down), and a cleanup job registers its singleton on module init.
// Plain JavaScript: the decorators are called as functions, so there is no build step.
//
//   npm install locked @nestjs/core @nestjs/common reflect-metadata rxjs
//   ETCD_HOSTS=127.0.0.1:2379 node nestjs.js      (start it twice; stop the leader with Ctrl-C)
require('reflect-metadata') // Nest reads the decorators' metadata through it
const { Inject, Injectable, Module } = require('@nestjs/common')
const { NestFactory } = require('@nestjs/core')
const locked = require('locked')

const LOCKED_OPTIONS = 'LOCKED_OPTIONS'

class LockerService {
  constructor ({ hosts, ...options }) {
    this.locker = locked(hosts, options)
    this.locker.on('error', (err) => console.error(`etcd trouble: ${err.code} ${err.message}`))
  }

  // app.close(), or a signal with app.enableShutdownHooks(): step down everywhere, wait for the
  // leaders' work (drainTimeout), revoke the lease. The next host starts within milliseconds.
  async onApplicationShutdown () {
    await this.locker.close()
  }
}
Injectable()(LockerService)
Inject(LOCKED_OPTIONS)(LockerService, undefined, 0) // constructor parameter 0

class CleanupJob {
  constructor (lockerService) {
    this.locker = lockerService.locker
  }

  // On module init every provider exists: a good time to start campaigning.
  onModuleInit () {
    const singleton = this.locker('cleanup', (remove, term) => this.lead(term))
    singleton.on('error', (err) => console.error(`cleanup: ${err.code} ${err.message}`))
  }

  // Runs on one instance at a time; returns when the term ends, so shutdown waits for it.
  async lead ({ token, signal }) {
    console.log(`leading cleanup (token ${token})`)
    while (!signal.aborted) {
      // ... one step of the job, carrying the fencing token to whatever it writes ...
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 500)
        signal.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
      })
    }
    console.log('cleanup: work wound down')
  }
}
Injectable()(CleanupJob)
Inject(LockerService)(CleanupJob, undefined, 0)

class AppModule {}
Module({
  providers: [
    {
      provide: LOCKED_OPTIONS,
      useValue: { hosts: process.env.ETCD_HOSTS || '127.0.0.1:2379', id: process.env.HOST_ID, drainTimeout: 10000 }
    },
    LockerService,
    CleanupJob
  ]
})(AppModule)

async function main () {
  // No HTTP server needed for this; NestFactory.create(AppModule) works the same way.
  const app = await NestFactory.createApplicationContext(AppModule, { logger: ['error', 'warn'] })
  app.enableShutdownHooks() // SIGTERM/SIGINT call app.close(), then the process exits
  console.log('application started')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
