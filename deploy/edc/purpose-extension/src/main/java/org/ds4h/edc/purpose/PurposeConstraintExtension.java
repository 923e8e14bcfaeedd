/*
 * Binds the ODRL left operand dpv:hasPurpose so that EDC evaluates the gateway's purpose constraint instead
 * of dropping it. Sketch for EDC 0.18, NOT compiled or run here (see ../README.md): check the SPI names
 * against the EDC version you build.
 */
package org.ds4h.edc.purpose;

import java.util.Collection;

import org.eclipse.edc.connector.controlplane.catalog.spi.policy.CatalogPolicyContext;
import org.eclipse.edc.connector.controlplane.contract.spi.policy.ContractNegotiationPolicyContext;
import org.eclipse.edc.connector.controlplane.contract.spi.policy.TransferProcessPolicyContext;
import org.eclipse.edc.participant.spi.ParticipantAgentPolicyContext;
import org.eclipse.edc.policy.engine.spi.AtomicConstraintRuleFunction;
import org.eclipse.edc.policy.engine.spi.PolicyEngine;
import org.eclipse.edc.policy.engine.spi.RuleBindingRegistry;
import org.eclipse.edc.policy.model.Operator;
import org.eclipse.edc.policy.model.Permission;
import org.eclipse.edc.runtime.metamodel.annotation.Inject;
import org.eclipse.edc.runtime.metamodel.annotation.Setting;
import org.eclipse.edc.spi.system.ServiceExtension;
import org.eclipse.edc.spi.system.ServiceExtensionContext;

public class PurposeConstraintExtension implements ServiceExtension {
    static final String HAS_PURPOSE = "https://w3id.org/dpv#hasPurpose";

    @Setting(key = "ds4h.purpose.claim", defaultValue = "purpose",
            description = "claim of the consumer's verified credentials that carries its purposes")
    private String claim;

    @Inject
    private RuleBindingRegistry bindings;

    @Inject
    private PolicyEngine engine;

    @Override
    public void initialize(ServiceExtensionContext context) {
        for (var scope : new String[] {
                CatalogPolicyContext.CATALOG_SCOPE,
                ContractNegotiationPolicyContext.NEGOTIATION_SCOPE,
                TransferProcessPolicyContext.TRANSFER_SCOPE}) {
            bindings.bind(HAS_PURPOSE, scope);
        }
        engine.registerFunction(CatalogPolicyContext.class, Permission.class, HAS_PURPOSE, new HasPurpose<>(claim));
        engine.registerFunction(ContractNegotiationPolicyContext.class, Permission.class, HAS_PURPOSE, new HasPurpose<>(claim));
        engine.registerFunction(TransferProcessPolicyContext.class, Permission.class, HAS_PURPOSE, new HasPurpose<>(claim));
    }

    /** eq / isAnyOf: the consumer's verified purposes must include the right operand. */
    static final class HasPurpose<C extends ParticipantAgentPolicyContext>
            implements AtomicConstraintRuleFunction<Permission, C> {
        private final String claim;

        HasPurpose(String claim) {
            this.claim = claim;
        }

        @Override
        public boolean evaluate(Operator operator, Object rightValue, Permission rule, C context) {
            var agent = context.participantAgent();
            if (agent == null) {
                context.reportProblem("no participant agent: purpose cannot be checked");
                return false;
            }
            Object claimed = agent.getClaims().get(claim);
            var purposes = claimed instanceof Collection<?> c ? c : claimed == null ? java.util.List.of() : java.util.List.of(claimed);
            return switch (operator) {
                case EQ -> purposes.stream().anyMatch(p -> p.toString().equals(String.valueOf(rightValue)));
                case IS_ANY_OF -> rightValue instanceof Collection<?> r && purposes.stream().anyMatch(p -> r.contains(p.toString()));
                default -> {
                    context.reportProblem("operator " + operator + " is not supported for " + HAS_PURPOSE);
                    yield false;
                }
            };
        }
    }
}
