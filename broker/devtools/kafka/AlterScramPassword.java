// Sets (creates or replaces) one user's SCRAM-SHA-512 password through the Kafka Admin API
// (AlterUserScramCredentials, KIP-554), which aiokafka does not implement.
// Run in source-file mode with the launcher's jars: java -cp "<libs>/*" AlterScramPassword.java
// Arguments: <bootstrap host:port of a SASL_SSL listener> <CA PEM file> <admin user> <user>.
// Passwords come from the environment (MDM_SCRAM_ADMIN_PASSWORD, MDM_SCRAM_NEW_PASSWORD), never
// from the command line, so they do not show in process listings.
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;

public class AlterScramPassword {
    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: AlterScramPassword <bootstrap> <ca.pem> <admin-user> <user>");
            System.exit(2);
        }
        String adminPassword = System.getenv("MDM_SCRAM_ADMIN_PASSWORD");
        String newPassword = System.getenv("MDM_SCRAM_NEW_PASSWORD");
        if (adminPassword == null || newPassword == null) {
            System.err.println("set MDM_SCRAM_ADMIN_PASSWORD and MDM_SCRAM_NEW_PASSWORD");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("security.protocol", "SASL_SSL");
        props.put("sasl.mechanism", "SCRAM-SHA-512");
        props.put("ssl.truststore.type", "PEM");
        props.put("ssl.truststore.location", args[1]);
        props.put("sasl.jaas.config",
            "org.apache.kafka.common.security.scram.ScramLoginModule required username=\""
                + args[2] + "\" password=\"" + adminPassword + "\";");
        try (Admin admin = Admin.create(props)) {
            admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(
                args[3], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), newPassword)))
                .all().get();
        }
        System.out.println("SCRAM-SHA-512 password of " + args[3] + " set");
    }
}
