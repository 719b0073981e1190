/* The tpm backend's part of the fuzz world (fuzz_tpm_report.c, make_seeds.c): fixed tpm evidence, the policy a
 * verifier of it holds (the world's CA, also as AK CA, at the time of the run), and reports for that evidence
 * quoted in software by an AK the world's CA certified when the world was built. */
#ifndef IDEVS_FUZZ_TPM_WORLD_H
#define IDEVS_FUZZ_TPM_WORLD_H

#include <stddef.h>
#include <stdint.h>

#include "fuzz_world.h"
#include "idevs_cert.h"

#define FUZZ_TPM_REGISTER 15

/* The evidence every report is checked against: fixed measurement, program, descriptor digest, key binding and
 * a 32-byte nonce. */
void fuzz_tpm_evidence(idevs_evidence *ev);

/* Trusts the world's CA (operator CA, hence AK CA); the caller frees it. */
idevs_cert_policy *fuzz_tpm_policy(const fuzz_world *w);

/* A valid TpmReport for fuzz_tpm_evidence: a fresh AK certified by the world's CA for 30 days, a log of events
 * events (the evidence's the last), register_pcr as given, quoted by that AK over PCRs 0-7 (zero) and
 * FUZZ_TPM_REGISTER. malloc'd; exits on failure. */
uint8_t *fuzz_tpm_report(const fuzz_world *w, size_t events, unsigned register_pcr, size_t *len);

#endif
